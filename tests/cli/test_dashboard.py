"""``portcullis dashboard`` hands Streamlit the app, the bind address and headless settings, and
the app the data directory. (Serving for real is tested in tests/dashboard/test_browser.py and
tests/dashboard/test_signin.py.)"""
from __future__ import annotations

import logging
import os
import signal
import sys
from importlib.util import find_spec

import pytest
import streamlit as st
from click.testing import CliRunner

from gateway.cli import main


@pytest.fixture
def served(monkeypatch):
    """The apps ``portcullis dashboard`` would serve, with the config it gives them; nothing served."""
    calls = []
    monkeypatch.setattr(st.App, "run", lambda app, config: calls.append((app, config)))
    for name in ("PORTCULLIS_DATA", "PORTCULLIS_DASHBOARD_AUTH", "PORTCULLIS_DASHBOARD_PROXY_USER_HEADER"):
        monkeypatch.delenv(name, raising=False)  # restored afterwards: the command sets them
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # the test process keeps its handlers
    root = logging.getLogger()  # and its logging: the command sends every logger's lines to stderr
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    return calls


def test_flags_reach_streamlit(tmp_path, served):
    result = CliRunner().invoke(main, ["dashboard", "--host", "0.0.0.0", "--port", "8600", "--allow-unauthenticated",
                                       "--data", str(tmp_path)])
    assert result.exit_code == 0, result.output
    [(app, config)] = served
    assert sys.argv == [find_spec("dashboard.app").origin]
    assert config == {
        "server.address": "0.0.0.0", "server.port": 8600, "server.headless": True,
        "server.fileWatcherType": "none", "browser.gatherUsageStats": False, "client.toolbarMode": "viewer",
    }
    assert os.environ["PORTCULLIS_DATA"] == str(tmp_path.resolve())
    assert os.environ["PORTCULLIS_DASHBOARD_AUTH"] == "none"


def test_defaults_come_from_the_settings(tmp_path, served):
    (tmp_path / "portcullis.toml").write_text("[dashboard]\nport = 8700\n")
    result = CliRunner().invoke(main, ["dashboard", "--data", str(tmp_path)])
    assert result.exit_code == 0, result.output
    [(_, config)] = served
    assert config["server.address"] == "127.0.0.1" and config["server.port"] == 8700

