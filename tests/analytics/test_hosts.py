"""Several hosts' trails as one history: the views read an audit directory outside the data
directory (``audit_directory``), every report counts every host, and the host filter narrows
each report to some hosts, read raw or from the rollups alike."""
from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from analytics.db import confine, connect, query
from analytics.registry import run_report
from analytics.rollups import build
from gateway.cli import main
from tests.analytics.conftest import HOUR, NOW, record, write_audit

# Decisions per host over the last day, spread over its hours; gw2 has two workers.
CALLS = {"gw1-w0": 5, "gw2-w0": 3, "gw2-w1": 4, "gw3-w0": 2}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data directory whose audit directory is a shared one elsewhere, written by three hosts."""
    shared = tmp_path / "shared"
    for instance, calls in CALLS.items():
        write_audit(shared, [record(NOW - (n + 1) * 3 * HOUR, instance=instance, decision="deny" if n == 0 else "allow")
                             for n in range(calls)], name=f"{instance}-20260615T000000000000-abcdef")
    data = tmp_path / "data"
    data.mkdir()
    (data / "portcullis.toml").write_text(f'[audit]\ndirectory = "{shared / "audit"}"\n')
    return data


def _per_host(con: duckdb.DuckDBPyConnection, hosts: list[str] = ()) -> dict[str, int]:
    rows = run_report(con, "hosts", hosts, now=NOW, days=2).to_pylist()
    return {row["host"]: row["decisions"] for row in rows}


def _decisions(con: duckdb.DuckDBPyConnection, hosts: list[str] = ()) -> int:
    return sum(row["calls"] for row in run_report(con, "trends", hosts, now=NOW, days=2).to_pylist())


@pytest.mark.parametrize("rolled_up", [False, True], ids=["raw", "rollups"])
def test_every_host_is_one_history_and_the_filter_narrows_it(data: Path, rolled_up: bool) -> None:
    if rolled_up:
        assert build(data, now=NOW, grace=timedelta(0)).hours_built > 0
    con = connect(data)
    assert query(con, "SELECT count(DISTINCT instance) AS n FROM audit")["n"][0].as_py() == 4
    assert _per_host(con) == {"gw1": 5, "gw2": 7, "gw3": 2}
    assert _decisions(con) == 14
    assert _decisions(con, ["gw2"]) == 7 and _per_host(con, ["gw2", "gw3"]) == {"gw2": 7, "gw3": 2}
    overview = run_report(con, "overview", ["gw1"], now=NOW, hours=24).to_pylist()
    assert {row["period"]: row["decisions"] for row in overview}["current"] == 5
    page = run_report(con, "audit-page", ["gw3"], now=NOW, hours=24).to_pylist()
    assert {row["instance"] for row in page} == {"gw3-w0"} and page[0]["matching"] == 2
    assert _decisions(con) == 14, "the filter is lifted after each report"


def test_a_confined_connection_reads_the_shared_audit_directory_and_nothing_else(data: Path) -> None:
    (data / "keys").mkdir()
    (data / "keys" / "audit_ed25519.pem").write_text("secret")
    con = connect(data)
    confine(con, data)
    assert _decisions(con) == 14
    with pytest.raises(duckdb.Error, match="Permission Error"):
        con.sql(f"SELECT * FROM read_text('{data / 'keys' / 'audit_ed25519.pem'}')").fetchall()


def test_report_host_option(data: Path) -> None:
    result = CliRunner().invoke(main, ["report", "trends", "--host", "gw1", "--host", "gw3", "--days", "2",
                                       "--now", NOW.isoformat(), "--format", "json", "--data", str(data)])
    assert result.exit_code == 0, result.output
    assert sum(row["calls"] for row in json.loads(result.stdout)["rows"]) == 7
