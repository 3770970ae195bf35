"""The Overview's attention list evaluated ahead of visitors: what the upkeep evaluates is what a
visitor would, the default view shows it (waiting for one under way) and says when it was made,
any other view, a stale evaluation or a failed one leaves the visitor to evaluate it."""
from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from contextlib import contextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Iterator

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import attention, data, upkeep, watch
from dashboard.data import RANGES

APP = str(Path(__file__).parents[2] / "dashboard" / "app.py")


@pytest.fixture
def root(troubled: Path):
    import streamlit as st

    st.cache_resource.clear()
    st.cache_data.clear()
    watch._done.clear()
    watch._running.clear()
    yield str(troubled)
    watch._done.clear()
    watch._running.clear()
    st.cache_resource.clear()
    st.cache_data.clear()


def headlines(items) -> list[str]:
    return [item.headline for item in items]


def test_the_evaluation_is_what_a_visitor_would_see_and_only_for_the_default_view(root):
    evaluation = watch.refresh(root)
    assert evaluation.items, "the planted trouble"
    assert evaluation.items == attention.gather(partial(data.query, root), watch.default_view())
    assert watch.latest(root, watch.default_view()) is evaluation
    assert watch.latest(root, RANGES["Last 24 hours"]) is None
    assert watch.latest(str(Path(root).parent / "elsewhere"), watch.default_view()) is None


def test_a_stale_evaluation_is_not_shown(root, monkeypatch):
    watch.refresh(root)
    monkeypatch.setattr(watch, "MAX_AGE_S", 0.0)
    time.sleep(0.01)
    assert watch.latest(root, watch.default_view()) is None


@contextmanager
def evaluation_held(root: str) -> Iterator[None]:
    """An evaluation under way, held at its first report (the connection's lock) until the block
    ends, then finished."""
    db = data._database(root)
    with db.lock:
        evaluating = threading.Thread(target=watch.refresh, args=(root,))
        evaluating.start()
        deadline = time.monotonic() + 10
        while root not in watch._running:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield
    evaluating.join(timeout=60)


def waiting_in(thread: threading.Thread) -> list[str]:
    """The functions on ``thread``'s stack now, innermost first."""
    frame, names = sys._current_frames().get(thread.ident), []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return names


def test_a_visitor_waits_for_the_evaluation_under_way(root):
    answers = []
    with evaluation_held(root):
        visitor = threading.Thread(target=lambda: answers.append(watch.latest(root, watch.default_view())))
        visitor.start()
        deadline = time.monotonic() + 10
        while "result" not in waiting_in(visitor):  # Future.result, inside watch.latest
            assert time.monotonic() < deadline, waiting_in(visitor)
            time.sleep(0.01)
        assert not answers and "query" not in waiting_in(visitor), "it waits rather than evaluating beside it"
    visitor.join(timeout=60)
    assert answers[0] is not None and answers[0].items == watch.latest(root, watch.default_view()).items


def test_while_the_next_evaluation_runs_the_last_fresh_one_is_shown_at_once(root):
    first = watch.refresh(root)
    with evaluation_held(root):
        assert watch.latest(root, watch.default_view()) is first  # no wait: the evaluation is held
    assert watch.latest(root, watch.default_view()) is not first


def test_a_failed_evaluation_is_logged_and_left_to_the_visitor(root, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise OSError("disk gone")

    monkeypatch.setattr(data, "query", broken)
    upkeep._evaluate_attention(root)
    assert "could not evaluate the attention list" in caplog.text and "disk gone" in caplog.text
    assert watch.latest(root, watch.default_view()) is None


def test_the_overview_shows_the_evaluation_and_when_it_was_made(root, monkeypatch):
    monkeypatch.setenv("PORTCULLIS_DATA", root)
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    live = [m.value for m in at.markdown if "**" in m.value]
    assert live and not any(c.value.startswith("Checked at") for c in at.caption)

    evaluation = watch.refresh(root)
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [m.value for m in at.markdown if "**" in m.value]
    assert shown == live and all(any(h in m for m in shown) for h in headlines(evaluation.items))
    assert f"Checked at {evaluation.as_of:%H:%M:%S} UTC" in [c.value.split(";")[0] for c in at.caption]


def test_the_upkeep_evaluates_it_once_the_connection_is_open(root, monkeypatch):
    monkeypatch.setattr(upkeep, "FIRST_BUILD_AFTER_S", 3600.0)  # no build: the evaluation comes first
    thread, stop = upkeep.start(root, timedelta(0))
    try:
        deadline = time.monotonic() + 60
        while watch.latest(root, watch.default_view()) is None:
            assert time.monotonic() < deadline, "no evaluation"
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert watch.latest(root, watch.default_view()).items


class Rounds(threading.Event):
    """A stop event that lets the upkeep wait ``n`` times, then stops it (no sleeping)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.left = n

    def wait(self, timeout: float | None = None) -> bool:
        self.left -= 1
        return self.left < 0


def test_the_first_round_soon_after_start_does_not_evaluate_it_again(root, tmp_path, caplog):
    """The first build comes seconds after start, when the first visitors do: one evaluation then,
    not two back to back holding the connection."""
    copy = str(shutil.copytree(root, tmp_path / "data"))
    shutil.rmtree(Path(copy, "rollups"), ignore_errors=True)  # another test's dashboard may have built them
    with caplog.at_level(logging.INFO, logger="portcullis.dashboard"):
        upkeep.run(copy, timedelta(0), Rounds(1))  # start, the first build's wait, one round
    said = [getattr(r, "event", None) for r in caplog.records]
    assert "rollups_built" in said and said.count("attention_evaluated") == 1, said
