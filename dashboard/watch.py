"""The Overview's attention list for its default view, evaluated ahead of visitors.

The list needs seven reports, about a second and a half over 10 million records; asked for when
someone opens the Overview, they would double the page's first render. Like an alerting rule, it
is instead evaluated in the background (``dashboard.upkeep``: once the connection is open, then
every round) and the Overview shows the latest evaluation, saying when it was made. That holds for
the default view only (the default range, every host), the one a dashboard opens on; any other
range or host filter is evaluated for its visitor (``attention.gather`` over the cached reports).

An evaluation older than :data:`MAX_AGE_S` (the upkeep stopped or fell behind) is not shown. While
the next one runs, the last one is shown as long as it is fresh; without a fresh one, the one
under way is waited for, since running the same reports again beside it would only slow both.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass
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
    as_of: datetime  # when it began: the reports see the trail as it was then

    def fresh(self) -> bool:
        return (datetime.now(timezone.utc) - self.as_of).total_seconds() <= MAX_AGE_S


_done: dict[str, Evaluation] = {}  # data directory -> its newest finished evaluation
_running: dict[str, Future] = {}  # data directory -> the evaluation under way, if any
_lock = threading.Lock()


def default_view() -> TimeRange:
    return data.RANGES[data.DEFAULT_RANGE]


def refresh(root: str) -> Evaluation:
    """Evaluate the default view's attention list for ``root`` now, for the visitors to come.
    A failed evaluation is raised here, and visitors then evaluate it themselves."""
    running: Future = Future()
    with _lock:
        _running[root] = running
    began = datetime.now(timezone.utc)
    try:
        evaluation = Evaluation(attention.gather(partial(data.query, root), default_view()), began)
    except BaseException as exc:
        _settle(root, running)
        running.set_exception(exc)
        raise
    _settle(root, running, evaluation)  # in one step: a visitor sees it done or under way, never neither
    running.set_result(evaluation)
    return evaluation


def _settle(root: str, running: Future, evaluation: Evaluation | None = None) -> None:
    with _lock:
        if evaluation is not None:
            _done[root] = evaluation
        if _running.get(root) is running:
            del _running[root]


def latest(root: str, window: TimeRange) -> Evaluation | None:
    """For the default view, the newest evaluation that is fresh, else the one under way (waited
    for); None for any other view, or when there is neither: the caller evaluates it then."""
    if window != default_view():
        return None
    with _lock:
        done, running = _done.get(root), _running.get(root)
    if done is not None and done.fresh():
        return done
    if running is None:
        return None
    try:
        evaluation = running.result(timeout=WAIT_S)
    except Exception:  # failed, or stuck: the visitor's own evaluation says what is wrong
        return None
    return evaluation if evaluation.fresh() else None
