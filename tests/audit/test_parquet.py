from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from gateway.audit import parquet as parquet_module
from gateway.audit.manifest import Manifest, verify
from gateway.audit.parquet import convert_segment
from gateway.audit.schema import AUDIT_SCHEMA
from tests.audit.conftest import HOUR, T0, make_record, make_segment


def _glob(audit_dir: Path) -> str:
    return f"{audit_dir}/date=*/hour=*/*.parquet"


async def test_a_segment_becomes_hive_partitioned_zstd_parquet(tmp_path: Path, key) -> None:
    records = [make_record(i, ts=T0 + i) for i in range(300)]
    segment = await make_segment(tmp_path / "spool", [records[:100], records[100:]])
    audit = tmp_path / "audit"
    written = convert_segment(segment, audit, "host-w0", Manifest(audit, key))
    assert written == [f"date=2026-01-01/hour=12/host-w0-{segment.stem}.parquet"]
    assert not segment.exists()
    file = pq.ParquetFile(audit / written[0])
    assert file.schema_arrow == AUDIT_SCHEMA
    assert file.metadata.num_row_groups == 1, "records are buffered into one large row group"
    assert file.metadata.row_group(0).column(0).compression == "ZSTD"
    assert file.read()["decision_id"].to_pylist() == [r.decision_id for r in records]
    rows = duckdb.sql(f"SELECT count(*), min(date)::VARCHAR, min(hour), count(DISTINCT decision_id) "
                      f"FROM read_parquet('{_glob(audit)}', hive_partitioning=true)").fetchall()
    assert rows == [(300, "2026-01-01", 12, 300)]
    assert verify(audit, key.public_key()).ok


async def test_records_spanning_hours_go_to_one_file_per_hour(tmp_path: Path, key) -> None:
    records = [make_record(i, ts=T0 + (i % 3) * HOUR + i) for i in range(90)]
    segment = await make_segment(tmp_path / "spool", [records])
    audit = tmp_path / "audit"
    written = convert_segment(segment, audit, "w1", Manifest(audit, key))
    assert [p.split("/")[1] for p in written] == ["hour=12", "hour=13", "hour=14"]
    for path in written:
        assert pq.read_table(audit / path).num_rows == 30
    entries = list(Manifest(audit).entries())
    assert [e.rows for e in entries] == [30, 30, 30]
    assert entries[1].min_ts.startswith("2026-01-01T13:00:00")


async def test_replaying_a_segment_is_idempotent(tmp_path: Path, key) -> None:
    segment = await make_segment(tmp_path / "spool", [[make_record(i, ts=T0 + i * HOUR // 2) for i in range(4)]])
    copy = tmp_path / "copy.seg"
    shutil.copy(segment, copy)
    audit = tmp_path / "audit"
    manifest = Manifest(audit, key)
    first = convert_segment(segment, audit, "w0", manifest)
    shutil.copy(copy, segment)  # a crash before the segment was deleted: it is converted again
    second = convert_segment(segment, audit, "w0", manifest)
    assert second == [] and len(first) == 2
    assert sorted(p.relative_to(audit).as_posix() for p in audit.glob("date=*/hour=*/*")) == sorted(first)
    assert [e.path for e in manifest.entries()] == first
    assert duckdb.sql(f"SELECT count(*) FROM '{_glob(audit)}'").fetchall() == [(4,)]
    assert verify(audit, key.public_key()).ok


async def test_a_crash_between_rename_and_manifest_is_repaired_by_replay(tmp_path: Path, key, monkeypatch) -> None:
    segment = await make_segment(tmp_path / "spool", [[make_record(i) for i in range(5)]])
    audit = tmp_path / "audit"
    manifest = Manifest(audit, key)
    with monkeypatch.context() as patch:
        patch.setattr(Manifest, "append", lambda self, **facts: (_ for _ in ()).throw(OSError("crash")))
        with pytest.raises(OSError):
            convert_segment(segment, audit, "w0", manifest)
    assert segment.exists()
    assert [p.kind for p in verify(audit, key.public_key()).problems] == ["unlisted"]
    written = convert_segment(segment, audit, "w0", manifest)
    assert len(written) == 1 and len(list(manifest.entries())) == 1
    assert verify(audit, key.public_key()).ok


async def test_temp_files_never_match_the_reader_glob(tmp_path: Path, key, monkeypatch) -> None:
    segment = await make_segment(tmp_path / "spool", [[make_record()]])
    audit = tmp_path / "audit"
    seen: list[int] = []

    def install_and_look(tmp: Path, final: Path) -> None:
        assert tmp.name.endswith(".parquet.tmp")
        seen.append(len(list(audit.glob("date=*/hour=*/*.parquet"))))
        real_install(tmp, final)

    real_install = parquet_module.install
    monkeypatch.setattr(parquet_module, "install", install_and_look)
    convert_segment(segment, audit, "w0", Manifest(audit, key))
    assert seen == [0]
    assert len(list(audit.glob("date=*/hour=*/*.parquet"))) == 1


def test_a_segment_without_records_leaves_no_file(tmp_path: Path, key) -> None:
    segment = tmp_path / "empty.seg"
    segment.write_bytes(b"")
    assert convert_segment(segment, tmp_path / "audit", "w0", Manifest(tmp_path / "audit", key)) == []
    assert not segment.exists()
