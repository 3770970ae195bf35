"""Each worker's event loop (setting ``event_loop``): uvloop where installed, asyncio's otherwise."""
from __future__ import annotations

import sys

import pytest
import uvloop

from gateway.config import SettingsError, load_settings
from gateway.workers import loop_factory


def test_workers_run_uvloop_by_default_and_asyncio_when_asked(tmp_path):
    assert load_settings(tmp_path, env={}).event_loop == "uvloop"
    assert loop_factory("uvloop") is uvloop.new_event_loop
    assert loop_factory("asyncio") is None  # asyncio.Runner's default loop
    assert load_settings(tmp_path, env={"PORTCULLIS_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"
    with pytest.raises(SettingsError, match="event_loop"):
        load_settings(tmp_path, env={"PORTCULLIS_EVENT_LOOP": "trio"})


def test_without_uvloop_a_worker_falls_back_to_asyncio_with_a_warning(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert loop_factory("uvloop") is None
    assert "uvloop is not installed" in caplog.text
