"""deploy/prometheus/alerts.yml: valid for promtool, unit-tested by promtool, and only about
metrics the gateway really exposes."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from gateway.audit import MemorySink
from gateway.http.app import create_app

RULES = Path(__file__).parent.parent / "deploy" / "prometheus"
promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                              reason="promtool missing: scripts/setup installs the Debian package prometheus")


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], cwd=RULES, capture_output=True, text=True, timeout=60)


@promtool
def test_rules_are_valid():
    result = _promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@promtool
def test_rules_fire_on_what_they_are_for_and_not_otherwise():
    result = _promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested():
    alerts = {r["alert"] for g in yaml.safe_load((RULES / "alerts.yml").read_text())["groups"] for r in g["rules"]}
    tests = yaml.safe_load((RULES / "alerts_test.yml").read_text())["tests"]
    tested = {case["alertname"] for t in tests for case in t["alert_rule_test"] if case.get("exp_alerts")}
    assert alerts == tested


async def test_rules_use_only_metrics_the_gateway_exposes(data_dir, aiohttp_client):
    client = await aiohttp_client(create_app(data_dir.settings, sink_factory=lambda s, w: MemorySink()))
    await client.post("/v1/check", data=b"{}", headers={"Content-Type": "application/json"})  # one of each kind
    exposed = await (await client.get("/metrics")).text()
    names = set(re.findall(r"^# TYPE (\w+) ", exposed, flags=re.MULTILINE))
    used = set(re.findall(r"\bportcullis_\w+", (RULES / "alerts.yml").read_text()))
    assert used <= names, used - names
