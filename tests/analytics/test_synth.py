"""The synthetic history: exact schema, the gateway's layout, and the cases the reports look for."""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from analytics.db import connect, query
from analytics.registry import run_report
from analytics.synth.__main__ import main
from analytics.synth.population import COHORT_SHARE, EXPIRING
from gateway.audit.schema import AUDIT_SCHEMA

END = datetime(2026, 3, 1, tzinfo=timezone.utc)
ROWS, DAYS, LICENSES = 60_000, 6, 200


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("synth")
    assert main(["--data", str(data), "--days", str(DAYS), "--rows", str(ROWS), "--licenses", str(LICENSES),
                 "--end", END.isoformat()]) == 0
    return data


def test_files_are_hive_partitioned_hours_in_the_exact_schema(synth):
    data = synth
    files = sorted((data / "audit").glob("date=*/hour=*/*.parquet"))
    assert len(files) == DAYS * 24
    assert all(re.fullmatch(r"date=\d{4}-\d\d-\d\d/hour=\d\d", f.parent.relative_to(data / "audit").as_posix())
               for f in files)
    assert all(pq.read_schema(f).equals(AUDIT_SCHEMA) for f in files[:5])
    assert not list((data / "audit").rglob("*.tmp"))
    assert sum(pq.read_metadata(f).num_rows for f in files) == ROWS


def test_history_has_diurnal_load_and_the_misbehaviour_the_reports_find(synth):
    data = synth
    con = connect(data)
    by_hour = {r["hour"]: r["n"] for r in query(con, "SELECT hour, count(*) AS n FROM audit GROUP BY hour").to_pylist()}
    assert by_hour[14] > 2 * by_hour[2]  # busy afternoons, quiet nights (UTC)
    expiring = run_report(con, "expiring", now=END)
    assert expiring.num_rows == round(COHORT_SHARE[EXPIRING] * LICENSES)
    kinds = {r["kind"] for r in run_report(con, "stale-keys", now=END, days=3).to_pylist()}
    assert {"stale", "never_used", "revoked", "expired", "unknown"} <= kinds
    unauthorized = run_report(con, "unauthorized", now=END).to_pylist()
    assert any(r["kind"] == "key_probing" and r["caller_id"] == "scanner" for r in unauthorized)
    assert any(r["auth_error"] == "bad_signature" for r in unauthorized)
    latency = run_report(con, "latency", now=END, bucket="day").to_pylist()
    assert all(r["p50_us"] < r["p95_us"] < r["p99_us"] <= r["max_us"] for r in latency)


def test_the_licenses_snapshot_matches_the_history(synth):
    data = synth
    con = connect(data)
    unknown = query(con, """SELECT count(*) AS n FROM audit a ANTI JOIN licenses l USING (license_id)
                            WHERE a.license_id IS NOT NULL""").to_pylist()
    assert unknown == [{"n": 0}]


def test_a_data_directory_with_history_is_refused(synth, capsys):
    data = synth
    assert main(["--data", str(data), "--days", "1", "--rows", "10"]) == 2
    assert "already holds audit files" in capsys.readouterr().err


def test_progress_and_summary(tmp_path: Path, capsys):
    assert main(["--data", str(tmp_path), "--days", "2", "--rows", "1000", "--licenses", "50"]) == 0
    out = capsys.readouterr()
    assert "day 2/2: 1,000 rows" in out.err
    assert json.loads(out.out)["rows"] == 1000


def test_the_skewed_shape(tmp_path: Path):
    """Most licenses expiring within the month, a few carrying most traffic, and files as another
    engine writes them: two per hour, not named after an instance, rows out of order, small row
    groups; the same records in the exact schema, which the reports read as any other."""
    data = tmp_path / "skewed"
    assert main(["--data", str(data), "--days", "1", "--rows", "300000", "--licenses", str(LICENSES),
                 "--end", END.isoformat(), "--shape", "skewed"]) == 0
    files = sorted((data / "audit").glob("date=*/hour=*/*.parquet"))
    assert len(files) == 24 * 2 and all(f.name.startswith("part-") for f in files)
    assert sum(pq.read_metadata(f).num_rows for f in files) == 300_000
    assert max(pq.read_metadata(f).num_row_groups for f in files) > 1
    assert pq.read_schema(files[0]).equals(AUDIT_SCHEMA)
    ts = pq.read_table(files[0], columns=["ts"])["ts"].to_pylist()
    assert ts != sorted(ts)
    con = connect(data)
    assert len(run_report(con, "expiring", now=END)) > LICENSES // 2
    top = query(con, "SELECT sum(n) FILTER (WHERE rank <= 5) / sum(n) AS share FROM (SELECT count(*) AS n, "
                     "row_number() OVER (ORDER BY count(*) DESC) AS rank FROM audit GROUP BY license_id)")
    assert top.to_pylist()[0]["share"] > 0.5  # 5 licenses of 200
