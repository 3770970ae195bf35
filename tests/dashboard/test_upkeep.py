"""The dashboard's background upkeep: the connection opened before the first visitor, the rollups
built, and the connection renewed to read them; a failing build logged and tried again."""
from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from dashboard import data, upkeep


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def this_hour() -> datetime:
    return datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)


def rollups_until(root: Path):
    db = data._database(str(root))
    with db.lock:
        return db.con.execute("SELECT getvariable('rollups_until')").fetchall()[0][0]


@pytest.fixture
def root(history: Path, tmp_path: Path, monkeypatch) -> Path:
    import streamlit as st

    monkeypatch.setattr(upkeep, "FIRST_BUILD_AFTER_S", 0.0)

    st.cache_resource.clear()
    copy = Path(shutil.copytree(history, tmp_path / "data"))
    shutil.rmtree(copy / "rollups", ignore_errors=True)  # a dashboard test may have built them
    yield copy
    st.cache_resource.clear()


def test_upkeep_builds_the_rollups_and_renews_the_connection(root: Path):
    assert rollups_until(root) is None, "a visitor's connection, opened before any rollup existed"
    # With no grace every hour before the current one is closed: the rollups reach it, or the end
    # of the trail's last day if the day has turned since the session's history was written.
    last_day = max(datetime.strptime(p.name, "date=%Y-%m-%d") for p in (root / "audit").glob("date=*"))
    day_end = last_day.replace(tzinfo=timezone.utc) + timedelta(days=1)
    began = this_hour()
    thread, stop = upkeep.start(str(root), timedelta(0))
    try:  # the hour may turn meanwhile
        wait_for(lambda: rollups_until(root) in {min(began, day_end), min(this_hour(), day_end)})
    finally:
        stop.set()
        thread.join(timeout=60)
    days = sorted(p.parent.name for p in (root / "rollups").glob("date=*/hours.parquet"))
    assert days == sorted(p.name for p in (root / "audit").glob("date=*"))


def test_a_failed_build_is_logged_and_tried_again(root: Path, monkeypatch, caplog):
    monkeypatch.setattr(upkeep, "INTERVAL_S", 0.05)
    (root / "rollups").write_text("not a directory")
    stop = threading.Event()
    with caplog.at_level(logging.ERROR, logger="portcullis.dashboard"):
        thread = threading.Thread(target=upkeep.run, args=(str(root), timedelta(0), stop), daemon=True)
        thread.start()
        wait_for(lambda: sum("rollup upkeep failed" in r.message for r in caplog.records) >= 2)
        (root / "rollups").unlink()  # the volume is writable again
        wait_for(lambda: list((root / "rollups").glob("date=*/hours.parquet")))
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()


def test_rollups_built_by_another_process_renew_the_connection(root: Path, monkeypatch):
    from analytics import rollups

    monkeypatch.setattr(upkeep, "INTERVAL_S", 0.05)
    monkeypatch.setattr(upkeep, "_build", lambda root, grace: None)  # this dashboard builds nothing itself
    thread, stop = upkeep.start(str(root), timedelta(0))
    try:
        assert rollups_until(root) is None
        rollups.build(root, now=datetime.now(timezone.utc), grace=timedelta(0))  # `portcullis rollup` from cron
        wait_for(lambda: rollups_until(root) is not None)
    finally:
        stop.set()
        thread.join(timeout=60)


def test_the_first_build_waits_for_the_first_page_views(root: Path, monkeypatch):
    monkeypatch.setattr(upkeep, "FIRST_BUILD_AFTER_S", 1.0)
    began = time.monotonic()
    thread, stop = upkeep.start(str(root), timedelta(0))
    try:
        wait_for(lambda: list((root / "rollups").glob("date=*/hours.parquet")))
    finally:
        stop.set()
        thread.join(timeout=60)
    assert time.monotonic() - began >= 1.0


@pytest.fixture
def read_only(root: Path, tmp_path: Path):
    """``root`` mounted read-only (a bind mount), as a dashboard given a read-only volume sees it."""
    view = tmp_path / "read-only"
    view.mkdir()
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(root), str(view)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount read-only here: {mounted.stderr.strip()}")
    yield view
    subprocess.run(["umount", str(view)], check=True)


def test_a_read_only_data_directory_is_said_once_and_rollups_built_elsewhere_are_read(
        root: Path, read_only: Path, monkeypatch, caplog):
    from analytics import rollups

    monkeypatch.setattr(upkeep, "INTERVAL_S", 0.05)
    stop = threading.Event()
    with caplog.at_level(logging.INFO, logger="portcullis.dashboard"):
        thread = threading.Thread(target=upkeep.run, args=(str(read_only), timedelta(0), stop), daemon=True)
        thread.start()
        try:
            wait_for(lambda: any("cannot write" in r.getMessage() for r in caplog.records))
            assert rollups_until(read_only) is None
            rollups.build(root, now=datetime.now(timezone.utc), grace=timedelta(0))  # `portcullis rollup`, elsewhere
            wait_for(lambda: rollups_until(read_only) is not None)
        finally:
            stop.set()
            thread.join(timeout=60)
    said = [r for r in caplog.records if r.name == "portcullis.dashboard" and getattr(r, "event", None) != "attention_evaluated"]
    assert [r.levelname for r in said] == ["WARNING"], [r.getMessage() for r in said]
    assert "Read-only file system" in said[0].getMessage() and "portcullis rollup" in said[0].getMessage()
