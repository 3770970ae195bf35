from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from gateway.audit import compact as compact_module
from gateway.audit.compact import compact
from gateway.audit.manifest import Manifest, verify
from gateway.audit.parquet import convert_segment
from tests.audit.conftest import T0, add_file, make_record, make_segment

LATER = datetime(2026, 1, 1, 15, 30, tzinfo=timezone.utc)  # with 1 h grace: hours 12 and 13 are closed, 14 is not
GRACE = timedelta(hours=1)


def _rows(audit: Path) -> list[tuple]:
    return duckdb.sql(f"SELECT hour, decision_id FROM read_parquet('{audit}/date=*/hour=*/*.parquet', "
                      f"hive_partitioning=true) ORDER BY decision_id").fetchall()


@pytest.fixture
def trail(tmp_path: Path, key) -> Path:
    audit = tmp_path / "audit"
    manifest = Manifest(audit, key)
    for n in range(3):
        add_file(audit, manifest, 0, f"w0-a{n}", rows=5 + n)
    add_file(audit, manifest, 1, "w0-b0")
    for n in range(2):
        add_file(audit, manifest, 2, f"w0-c{n}")
    return audit


def _files(audit: Path, hour: int) -> list[str]:
    return sorted(p.name for p in (audit / f"date=2026-01-01/hour={hour}").iterdir())


def test_a_closed_hour_is_merged_into_one_file_and_verify_stays_green(trail: Path, key) -> None:
    before = _rows(trail)
    calls = []
    merges = compact(trail, key, now=LATER, grace=GRACE, progress=lambda *args: calls.append(args))
    assert [(m.partition, m.files, m.rows) for m in merges] == [("date=2026-01-01/hour=12", 3, 18)]
    assert calls == [(0, 1, "date=2026-01-01/hour=12"), (1, 1, "")]
    assert _files(trail, 12) == [merges[0].path.rsplit("/", 1)[1]]
    assert _files(trail, 13) == ["w0-b0.parquet"], "an hour with one file is left alone"
    assert len(_files(trail, 14)) == 2, "an hour that is not closed is left alone"
    assert _rows(trail) == before
    report = verify(trail, key.public_key())
    assert report.ok, report.problems
    assert report.rows == 18 + 3 + 6
    entry = list(Manifest(trail).entries())[-1]
    assert len(entry.replaces) == 3 and entry.rows == 18


def test_compacting_again_merges_late_files_with_the_merged_one(trail: Path, key) -> None:
    compact(trail, key, now=LATER, grace=GRACE)
    add_file(trail, Manifest(trail, key), 0, "w1-late", rows=2)
    assert compact(trail, key, now=LATER, grace=GRACE)[0].rows == 20
    assert len(_files(trail, 12)) == 1
    assert verify(trail, key.public_key()).ok
    assert compact(trail, key, now=LATER, grace=GRACE) == []


def test_an_interrupted_compaction_is_finished_by_the_next_run(trail: Path, key, monkeypatch) -> None:
    before = _rows(trail)
    with monkeypatch.context() as patch:
        patch.setattr(compact_module, "install", lambda tmp, final: (_ for _ in ()).throw(OSError("crash")))
        with pytest.raises(OSError):
            compact(trail, key, now=LATER, grace=GRACE)
    kinds = {p.kind for p in verify(trail, key.public_key()).problems}
    assert kinds == {"missing", "superseded"}, "listed but not yet renamed; the old files are still there"
    assert _rows(trail) == before, "readers still see every row exactly once"
    assert compact(trail, key, now=LATER, grace=GRACE) == []
    assert verify(trail, key.public_key()).ok
    assert _rows(trail) == before and len(_files(trail, 12)) == 1


def test_a_modified_input_is_never_merged(trail: Path, key) -> None:
    victim = trail / "date=2026-01-01/hour=12/w0-a1.parquet"
    victim.write_bytes(victim.read_bytes()[:-1] + b"\x00")
    entries = len(list(Manifest(trail).entries()))
    merges = compact(trail, key, now=LATER, grace=GRACE)
    assert merges[0].skipped and "w0-a1.parquet" in merges[0].skipped
    assert len(list(Manifest(trail).entries())) == entries
    assert [p.kind for p in verify(trail, key.public_key()).problems] == ["modified"]


async def test_a_segment_replayed_after_its_hour_was_compacted_adds_nothing(tmp_path: Path, key) -> None:
    audit = tmp_path / "audit"
    manifest = Manifest(audit, key)
    add_file(audit, manifest, 0, "w1-other")
    segment = await make_segment(tmp_path / "spool", [[make_record(i, ts=T0 + i) for i in range(4)]])
    shutil.copy(segment, tmp_path / "kept.seg")
    convert_segment(segment, audit, "w0", manifest)
    compact(audit, key, now=LATER, grace=GRACE)  # merges away the segment's file
    shutil.copy(tmp_path / "kept.seg", segment)  # the worker died before deleting its segment
    assert convert_segment(segment, audit, "w0", manifest, replay=True) == []
    ids = [row[1] for row in _rows(audit)]
    assert len(ids) == len(set(ids)) == 3 + 4
    assert verify(audit, key.public_key()).ok
