"""``portcullis dashboard`` hands Streamlit the app, the bind address and headless settings, and
the app the data directory. (Serving for real is tested in tests/dashboard/test_browser.py.)"""
from __future__ import annotations

import os
from importlib.util import find_spec

import pytest
from click.testing import CliRunner
from streamlit.web import cli as streamlit_cli

from gateway.cli import main


@pytest.fixture
def streamlit_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(streamlit_cli.main, "main", lambda args, prog_name: calls.append(args))
    monkeypatch.delenv("PORTCULLIS_DATA", raising=False)  # restored afterwards: the command sets it
    return calls


def options(args: list[str]) -> dict[str, str]:
    return dict(zip(args[2::2], args[3::2]))


def test_flags_reach_streamlit(tmp_path, streamlit_calls):
    result = CliRunner().invoke(main, ["dashboard", "--host", "0.0.0.0", "--port", "8600", "--data", str(tmp_path)])
    assert result.exit_code == 0, result.output
    [args] = streamlit_calls
    assert args[:2] == ["run", find_spec("dashboard.app").origin]
    assert options(args) == {
        "--server.address": "0.0.0.0", "--server.port": "8600", "--server.headless": "true",
        "--server.fileWatcherType": "none", "--browser.gatherUsageStats": "false", "--client.toolbarMode": "viewer",
    }
    assert os.environ["PORTCULLIS_DATA"] == str(tmp_path.resolve())


def test_defaults_come_from_the_settings(tmp_path, streamlit_calls):
    (tmp_path / "portcullis.toml").write_text("[dashboard]\nport = 8700\n")
    assert CliRunner().invoke(main, ["dashboard", "--data", str(tmp_path)]).exit_code == 0
    assert options(streamlit_calls[0])["--server.address"] == "127.0.0.1"
    assert options(streamlit_calls[0])["--server.port"] == "8700"
