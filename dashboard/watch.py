"""The Overview's attention list for its default view, evaluated ahead of visitors.

The list needs seven reports, about a second and a half over 10 million records; asked for when
someone opens the Overview, they would double the page's first render. Like an alerting rule, it
is instead evaluated in the background (``dashboard.upkeep``: once the connection is open, then
every round) and the Overview shows the latest evaluation, saying when it was made. That holds for
the default view only (the default range, every host), the one a dashboard opens on; any other
range or host filter is evaluated for its visitor (``attention.gather`` over the cached reports).

An evaluation older than :data:`MAX_AGE_S` (the upkeep stopped or fell behind) is not shown; one
under way is waited for, since running the same reports again beside it would only slow both.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial

from dashboard import attention, data
from dashboard.attention import Item
from dashboard.data import TimeRange

MAX_AGE_S = 150.0  # two upkeep rounds and a half: one late round is no reason to recompute
WAIT_S = 60.0  # for an evaluation under way, at most


@dataclass(frozen=True)
class Evaluation:
    items: list[Item]
    as_of: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def fresh(self) -> bool:
        return (datetime.now(timezone.utc) - self.as_of).total_seconds() <= MAX_AGE_S


_latest: dict[str, Future] = {}  # data directory -> its newest evaluation, done or under way
_lock = threading.Lock()


def default_view() -> TimeRange:
    return data.RANGES[data.DEFAULT_RANGE]


def refresh(root: str) -> Evaluation:
    """Evaluate the default view's attention list for ``root`` now, for the visitors to come.
    A failed evaluation is raised here, and visitors then evaluate it themselves."""
    pending: Future = Future()
    with _lock:
        _latest[root] = pending
    try:
        evaluation = Evaluation(attention.gather(partial(data.query, root), default_view()))
    except BaseException as exc:
        pending.set_exception(exc)
        raise
    pending.set_result(evaluation)
    return evaluation


def latest(root: str, window: TimeRange) -> Evaluation | None:
    """The newest evaluation for ``window`` if it is the default view and one is fresh or under
    way (waited for), else None: the caller evaluates it then."""
    if window != default_view():
        return None
    with _lock:
        pending = _latest.get(root)
    if pending is None:
        return None
    try:
        evaluation = pending.result(timeout=WAIT_S)
    except Exception:  # failed, or stuck: the visitor's own evaluation says what is wrong
        return None
    return evaluation if evaluation.fresh() else None
