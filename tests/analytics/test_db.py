"""connect(): the views over real files, an empty data directory, corrupt files; views.sql as
the stock DuckDB CLI would run it."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analytics.db import EMPTY_SCHEMAS, VIEWS_SQL, CorruptFileError, audit_files, connect, empty_views, is_live, query, \
    skipped_files
from analytics.registry import run_report

from .conftest import NOW, planted_records, record, write_audit


def columns(con, view):
    return [(name, kind) for name, kind, *_ in con.execute(f"DESCRIBE {view}").fetchall()]


@pytest.mark.parametrize("view", sorted(EMPTY_SCHEMAS))
def test_empty_data_directory_gives_empty_views_with_the_real_columns(planted: Path, empty_data: Path, view: str):
    empty, real = connect(empty_data), connect(planted)
    assert query(empty, f"SELECT count(*) AS n FROM {view}").to_pylist() == [{"n": 0}]
    assert columns(empty, view) == columns(real, view)


def test_audit_view_adds_typed_partition_columns(planted: Path):
    con = connect(planted)
    assert columns(con, "audit")[-2:] == [("date", "DATE"), ("hour", "INTEGER")]
    assert query(con, "SELECT count(*) AS n FROM audit").to_pylist() == [{"n": len(planted_records())}]


def test_temp_files_and_the_manifest_are_not_read(planted: Path):
    hour = next((planted / "audit").glob("date=*/hour=*"))
    (hour / "gw-test-w0-2.parquet.tmp").write_bytes(b"half written")
    (planted / "audit" / "_manifest.jsonl").write_text("{}\n")
    assert query(connect(planted), "SELECT count(*) AS n FROM audit").to_pylist() == [{"n": len(planted_records())}]


def test_views_sql_runs_verbatim_from_the_data_directory(planted: Path, monkeypatch):
    monkeypatch.chdir(planted)  # what `cd data && duckdb -init ../analytics/views.sql` does
    con = duckdb.connect()
    con.execute(VIEWS_SQL.read_text())
    assert con.execute("SELECT count(*) FROM audit").fetchone()[0] == len(planted_records())
    assert con.execute("SELECT count(*) FROM licenses").fetchone()[0] > 0


def test_older_files_without_newer_columns_are_read_by_name(planted: Path):
    old = planted / "audit" / "date=2020-01-01" / "hour=00"
    old.mkdir(parents=True)
    pq.write_table(pa.table({"ts": pa.array([NOW.replace(year=2020, month=1, day=1, hour=0)], pa.timestamp("us", tz="UTC")),
                             "decision": ["allow"]}), old / "ancient.parquet")
    con = connect(planted)
    assert query(con, "SELECT decision, error FROM audit WHERE date = DATE '2020-01-01'").to_pylist() == [
        {"decision": "allow", "error": None}]


@pytest.fixture
def truncated(planted: Path) -> Path:
    victim = sorted((planted / "audit").glob("date=*/hour=*/*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    return victim


def test_a_truncated_file_is_named_in_the_error(planted: Path, truncated: Path):
    with pytest.raises(CorruptFileError) as caught:
        connect(planted)  # the audit view reads every footer
    assert caught.value.path == str(truncated)
    assert str(truncated) in str(caught.value)


def test_skip_corrupt_leaves_the_file_out_and_the_report_runs(planted: Path, truncated: Path):
    con = connect(planted, skip_corrupt=True)
    assert skipped_files(con) == [str(truncated)]
    assert str(truncated) not in audit_files(con)
    assert run_report(con, "stale-keys", now=NOW).num_rows > 0


def test_a_damaged_page_is_traced_to_its_file(tmp_path: Path):
    """DuckDB reports some damage without naming a file; query() finds it and skip_corrupt
    leaves it out at query time."""
    data = tmp_path / "data"
    paths = write_audit(data, planted_records())
    victim = max(paths, key=lambda p: p.stat().st_size)
    raw = bytearray(victim.read_bytes())
    for i in range(4, 400):  # clobber the first page header, keep the footer intact
        raw[i] ^= 0x55
    victim.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError) as caught:
        query(connect(data), "SELECT * FROM audit")
    assert caught.value.path == str(victim)
    con = connect(data, skip_corrupt=True)
    assert 0 < query(con, "SELECT * FROM audit").num_rows < len(planted_records())
    assert skipped_files(con) == [str(victim)]


def test_sql_errors_are_not_blamed_on_files(planted: Path):
    con = connect(planted)
    with pytest.raises(duckdb.Error) as caught:
        query(con, "SELECT no_such_column FROM audit")
    assert not isinstance(caught.value, CorruptFileError)


def test_a_live_connection_sees_files_written_after_it_opened(planted: Path):
    con = connect(planted)
    assert is_live(con) and empty_views(con) == set()
    before = query(con, "SELECT count(*) AS n FROM audit").to_pylist()[0]["n"]
    write_audit(planted, [record(NOW - timedelta(days=400))], name="gw-later-w0-1")
    assert query(con, "SELECT count(*) AS n FROM audit").to_pylist() == [{"n": before + 1}]


def test_connections_fixed_to_what_they_saw_are_not_live(planted: Path, empty_data: Path, truncated: Path):
    """Nothing to read yet, or a file left out: such a connection does not see new files and has
    to be renewed (the dashboard does, after a while)."""
    empty = connect(empty_data)
    assert "audit" in empty_views(empty) and not is_live(empty)
    narrowed = connect(planted, skip_corrupt=True)
    assert skipped_files(narrowed) and not is_live(narrowed)
