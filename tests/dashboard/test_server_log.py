"""``portcullis dashboard`` as ``portcullis demo`` starts it: its background upkeep runs, and its
log (the demo's ``logs/dashboard.log``) carries no warning a newcomer would have to look into."""
from __future__ import annotations

import time

import pytest

from bench.browser import dashboard_server
from gateway.cli.setup import initialise
from gateway.config import load_settings

pytestmark = pytest.mark.slow


def test_the_dashboard_starts_its_upkeep_and_logs_no_warning(tmp_path):
    data, log = tmp_path / "data", tmp_path / "dashboard.log"
    initialise(load_settings(data, env={}))
    with dashboard_server(data, log):
        deadline = time.monotonic() + 90  # the upkeep's first build waits 10 s after start
        while not (data / "rollups" / "_build.lock").exists():  # analytics.rollups.build takes it
            assert time.monotonic() < deadline, "the upkeep never built the rollups"
            time.sleep(0.2)
    text = log.read_text(errors="replace")
    assert "No runtime found" not in text, text
    assert "WARNING" not in text and '"level": "warning"' not in text and "Traceback" not in text, text
    assert '"event": "attention_evaluated"' in text, text  # its own lines are there, as JSON
