"""``portcullis demo`` as a user runs it: the gateway answers, metrics move, the audit trail
grows next to the synthetic history, and it stops cleanly (after --duration, or on SIGTERM)."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import duckdb
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import load_settings

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _decisions(url: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=30) as response:
        families = text_string_to_metric_families(response.read().decode())
    return sum(s.value for f in families if f.name == "portcullis_decisions" for s in f.samples
               if s.name == "portcullis_decisions_total")


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
                if json.load(response) == {"status": "ok"}:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("the demo's gateway never answered")


def _until_decisions_move(url: str, within: float = 60) -> None:
    """Live traffic moves the gateway's decision counters (a loaded machine starts it late)."""
    before, deadline = _decisions(url), time.monotonic() + within
    while _decisions(url) <= before:
        assert time.monotonic() < deadline, "live traffic should move the decision counters"
        time.sleep(0.5)


def _live_parquet_rows(data, within: float) -> int:
    """Rows the demo's own gateway has written to Parquet so far, waiting up to ``within`` s."""
    live = load_settings(data, env={}).instance_id(0)
    deadline = time.monotonic() + within
    while not (files := list(data.glob(f"audit/date=*/hour=*/{live}-*.parquet"))) and time.monotonic() < deadline:
        time.sleep(0.5)
    return sum(duckdb.sql(f"SELECT count(*) FROM read_parquet('{f}')").fetchall()[0][0] for f in files)


def _demo(data, port: int, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gateway", "demo", "--data", str(data), "--port", str(port),
                             "--no-dashboard", "--rows", "20000", "--rate", "25", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_demo_runs_everything_and_stops_cleanly(tmp_path):
    data, port = tmp_path / "demo", _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _demo(data, port, "--duration", "20")
    try:
        _wait_healthy(url, proc)
        _until_decisions_move(url)
        assert _live_parquet_rows(data, within=60) > 0, "live records reach Parquet while the demo runs"
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert url in output and "requests sent" in output

    live = load_settings(data, env={}).instance_id(0)
    rows = dict(duckdb.sql(f"SELECT instance = '{live}', count(*) FROM read_parquet("
                           f"'{data}/audit/date=*/hour=*/*.parquet', union_by_name=true) GROUP BY 1").fetchall())
    assert rows[False] == 20000, "the synthetic history"
    assert rows[True] > 100, "the live traffic, flushed to Parquet when the gateway stopped"
    reasons = {r for (r,) in duckdb.sql(f"SELECT DISTINCT reason FROM read_parquet('{data}/audit/date=*/hour=*/"
                                        f"{live}-*.parquet')").fetchall()}
    assert {"VALID", "KEY_NOT_FOUND", "EXPIRING_SOON", "LICENSE_EXPIRED"} <= reasons
    deny_pct = dict(duckdb.sql(f"SELECT instance = '{live}', 100.0 * avg((decision = 'deny')::INT) FROM read_parquet("
                               f"'{data}/audit/date=*/hour=*/*.parquet', union_by_name=true) GROUP BY 1").fetchall())
    assert deny_pct[True] < 15, f"the live traffic is refused about as often as the history ({deny_pct})"

    # Run again on the same directory (reused, not regenerated) and stop it like a supervisor.
    proc = _demo(data, port)
    try:
        _wait_healthy(url, proc)
        _until_decisions_move(url)  # stopped while its traffic runs
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "reusing the demo data" in output, output


def test_a_killed_demo_leaves_no_service_behind(tmp_path):
    """kill -9 of the demo stops its gateway gracefully (no orphan keeps the port for the next demo)."""
    data, port = tmp_path / "demo", _free_port()
    proc = _demo(data, port)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.kill()
        proc.wait()
    deadline, free = time.monotonic() + 60, False
    while not free and time.monotonic() < deadline:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the next demo's gateway binds
            try:
                probe.bind(("127.0.0.1", port))
                free = True
            except OSError:
                time.sleep(0.2)
    assert free, "the demo's gateway outlived the demo"


def test_the_default_live_rate_is_the_historys_own_at_that_hour(tmp_path):
    """The live hour continues the synthetic history: for each hour of the day, the default rate
    is what the generated Parquet holds for that hour (within the draw's noise)."""
    from datetime import datetime, timezone

    from analytics.synth import generate
    from gateway.demo.traffic import history_rate

    days, rows = 2, 96_000
    generate(tmp_path, days=days, rows=rows, licenses=50, end=datetime(2026, 3, 3, tzinfo=timezone.utc))
    per_hour = dict(duckdb.sql(f"SELECT hour(ts AT TIME ZONE 'UTC'), count(*) / {days} FROM read_parquet("
                               f"'{tmp_path}/audit/date=*/hour=*/*.parquet') GROUP BY 1").fetchall())
    for hour, seen in per_hour.items():
        expected = history_rate(rows, days, datetime(2026, 3, 3, hour, tzinfo=timezone.utc)) * 3600
        assert abs(seen - expected) < 0.1 * expected + 20, (hour, seen, expected)
    assert max(per_hour.values()) > 5 * min(per_hour.values())  # and the day has its rhythm
