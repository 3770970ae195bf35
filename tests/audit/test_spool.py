from __future__ import annotations

import asyncio
import logging
import os
import struct
import threading
import time
from operator import attrgetter
from pathlib import Path

import pyarrow as pa
import pytest

from gateway.audit import segment as segment_module
from gateway.audit import spool as spool_module
from gateway.audit.schema import AUDIT_SCHEMA
from gateway.audit.records import InvalidRecord
from gateway.audit.segment import MAGIC, SpoolError, read_segment
from gateway.audit.spool import Spool
from tests.audit.conftest import make_record, read_back
from tests.conftest import wait_until

_TS = pa.timestamp("us", tz="UTC")
# SPEC §5, transcribed row by row: (column, type, nullable)
SPEC_COLUMNS = [
    ("ts", _TS, False), ("decision_id", pa.string(), False), ("request_id", pa.string(), False),
    ("instance", pa.string(), False), ("environment", pa.string(), False), ("caller_id", pa.string(), True),
    ("auth_method", pa.string(), False), ("auth_error", pa.string(), True), ("remote_addr", pa.string(), False),
    ("endpoint", pa.string(), False), ("http_status", pa.int16(), False), ("decision", pa.string(), False),
    ("reason", pa.string(), False), ("alerts", pa.list_(pa.string()), False), ("license_id", pa.string(), True),
    ("key_fp", pa.string(), True), ("customer", pa.string(), True), ("product", pa.string(), True),
    ("tier", pa.string(), True), ("user_id", pa.string(), True), ("feature", pa.string(), True),
    ("quantity", pa.int64(), False), ("seats_used", pa.int32(), True), ("seats_limit", pa.int32(), True),
    ("quota_used", pa.int64(), True), ("quota_limit", pa.int64(), True), ("expires_at", _TS, True),
    ("policy_version", pa.string(), False), ("latency_us", pa.int32(), False), ("trace_id", pa.string(), True),
    ("error", pa.string(), True),
]


def test_schema_is_the_spec_table() -> None:
    assert [(f.name, f.type, f.nullable) for f in AUDIT_SCHEMA] == SPEC_COLUMNS


def _spool(directory: Path, rotated: list[Path] | None = None, **options: float) -> Spool:
    directory.mkdir(parents=True, exist_ok=True)
    settings = {"rotate_s": 3600.0, "rotate_bytes": 1 << 30, "commit_interval_s": 0.0, **options}
    spool = Spool(directory, AUDIT_SCHEMA, on_rotated=(rotated if rotated is not None else []).append, **settings)
    spool.start()
    return spool


async def test_records_round_trip_through_both_encodings(tmp_path: Path) -> None:
    rotated: list[Path] = []
    spool = _spool(tmp_path, rotated)
    records = [make_record(i, ts=1_767_268_800_000_000 + i, quota_used=None if i % 2 else i,
                           trace_id=None if i % 3 else f"t-{i}", error="é ünïcode \n" if i % 7 == 0 else None)
               for i in range(1500)]
    await spool.append(records[:10])  # a small chunk: JSON lines
    await spool.append(records[10:1000])  # large chunks: Arrow batches
    await spool.append(records[1000:1001])
    await spool.append(records[1001:])
    await spool.close()
    assert len(rotated) == 1 and spool.records_written == 1500
    table = read_segment(rotated[0])
    assert table.schema == AUDIT_SCHEMA
    by_id = attrgetter("decision_id")
    assert sorted(read_back(table), key=by_id) == sorted(records, key=by_id)


@pytest.mark.parametrize("size", [1, spool_module.ARROW_MIN_RECORDS], ids=["json", "arrow"])
async def test_both_encodings_accept_and_refuse_the_same_records(tmp_path: Path, size: int) -> None:
    rotated: list[Path] = []
    spool = _spool(tmp_path, rotated)
    accepted = [make_record(i)._replace(seats_used=None) for i in range(size)]  # nullable: null
    await spool.append(accepted)
    for bad in (make_record(2, http_status=1 << 20), make_record(2, alerts=[1]), make_record(2, ts="yesterday"),
                make_record(2, decision=None), make_record(2)._asdict(), tuple(make_record(2))):
        with pytest.raises(InvalidRecord):
            await spool.append([make_record(1)] * (size - 1) + [bad])
    await spool.close()
    table = read_segment(rotated[0])
    assert table.num_rows == size and table["seats_used"].null_count == size


async def test_group_commit_covers_concurrent_submits_with_few_fsyncs(tmp_path: Path, monkeypatch) -> None:
    real_fsync, calls = os.fsync, []

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)
        time.sleep(0.005)  # a disk as slow as a busy one: submits pile up behind each fsync

    monkeypatch.setattr(segment_module.os, "fsync", counting_fsync)
    spool = _spool(tmp_path)
    await spool.append([make_record()])  # opens the segment: header fsync + directory fsync
    calls.clear()
    submits = 2000
    await asyncio.gather(*(spool.append([make_record(i)]) for i in range(submits)))
    assert spool.records_written == submits + 1
    assert len(calls) == spool.syncs - 1
    assert len(calls) <= submits / 20, f"{len(calls)} fsyncs for {submits} submits"
    await spool.close()


async def test_an_ack_comes_only_after_the_fsync(tmp_path: Path, monkeypatch) -> None:
    real_fsync = os.fsync
    entered, release = threading.Event(), threading.Event()

    def held_fsync(fd: int) -> None:  # the commit thread waits here until the test lets the disk finish
        entered.set()
        assert release.wait(30), "never released"
        real_fsync(fd)

    # Held from the first fsync on: the only records in the spool are the ones awaited here.
    monkeypatch.setattr(segment_module.os, "fsync", held_fsync)
    spool = _spool(tmp_path)
    future = spool.append([make_record()])
    assert await asyncio.to_thread(entered.wait, 30), "the record never reached an fsync"
    await asyncio.sleep(0.2)  # room for a premature ack to arrive
    assert not future.done(), "acknowledged while its fsync had not returned"
    release.set()
    await asyncio.wait_for(future, 30)
    await spool.close()


async def test_an_invalid_record_fails_only_its_own_submit(tmp_path: Path) -> None:
    rotated: list[Path] = []
    spool = _spool(tmp_path, rotated)
    good = [spool.append([make_record(i)]) for i in range(10)]
    bad_type = spool.append([make_record(http_status="two hundred")])
    missing = spool.append([make_record()._replace(decision_id=None)])
    not_a_record = spool.append([make_record()._asdict()])
    results = await asyncio.gather(*good, bad_type, missing, not_a_record, return_exceptions=True)
    assert results[:10] == [None] * 10
    assert isinstance(results[10], InvalidRecord) and "int16" in str(results[10])
    assert isinstance(results[11], InvalidRecord) and "decision_id" in str(results[11])
    assert isinstance(results[12], InvalidRecord) and "dict" in str(results[12])
    await spool.close()
    assert read_segment(rotated[0]).num_rows == 10


async def test_rotation_by_size_and_by_time(tmp_path: Path) -> None:
    rotated: list[Path] = []
    spool = _spool(tmp_path / "size", rotated, rotate_bytes=20_000)
    for i in range(5):
        await spool.append([make_record(j) for j in range(50)])
    assert len(rotated) >= 4, "each 50-record commit exceeds 20 kB"
    await spool.close()

    rotated_by_time: list[Path] = []
    spool = _spool(tmp_path / "time", rotated_by_time, rotate_s=0.2)
    await spool.append([make_record()])
    # An idle segment is closed once it is rotate_s old, by the spool itself (no close needed).
    await wait_until(lambda: rotated_by_time, what="the idle segment to be rotated")
    assert len(rotated_by_time) == 1
    await spool.close()
    assert len(rotated_by_time) == 1, "no empty segment is opened while idle"


async def _segment_with_commits(tmp_path: Path, commits: int) -> Path:
    rotated: list[Path] = []
    spool = _spool(tmp_path, rotated)
    for i in range(commits):
        await spool.append([make_record(i * 10 + j) for j in range(10)])
    await spool.close()
    return rotated[0]


async def test_torn_tail_recovers_every_whole_frame(tmp_path: Path, caplog) -> None:
    segment = await _segment_with_commits(tmp_path, 3)
    data = segment.read_bytes()
    whole = read_segment(segment)
    assert whole.num_rows == 30
    offset, frames = len(MAGIC), []  # walk the frame headers: <u32 length><u32 crc><payload>
    while offset < len(data):
        frames.append(offset)
        offset += 8 + struct.unpack_from("<I", data, offset)[0]
    assert len(frames) == 1 + 3, "the schema, then one frame per group commit"
    last_frame = frames[-1]
    for cut in (last_frame + 1, last_frame + 8, last_frame + 100, len(data) - 1):
        segment.write_bytes(data[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="gateway.audit.spool"):
            table = read_segment(segment)
        assert table.num_rows == 20
        assert table["user_id"].to_pylist() == whole["user_id"].to_pylist()[:20]
        assert f"{segment}" in caplog.text and f"torn tail at byte offset {last_frame}" in caplog.text


async def test_a_corrupt_frame_is_dropped_by_its_checksum(tmp_path: Path, caplog) -> None:
    segment = await _segment_with_commits(tmp_path, 2)
    data = bytearray(segment.read_bytes())
    data[-5] ^= 0xFF
    segment.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="gateway.audit.spool"):
        assert read_segment(segment).num_rows == 10
    assert "torn tail" in caplog.text


def test_segments_without_records(tmp_path: Path) -> None:
    empty = tmp_path / "empty.seg"
    empty.write_bytes(b"")
    assert read_segment(empty) is None
    torn_magic = tmp_path / "torn.seg"
    torn_magic.write_bytes(segment_module.MAGIC[:3])
    assert read_segment(torn_magic) is None
    foreign = tmp_path / "foreign.seg"
    foreign.write_bytes(b"not a spool segment at all")
    with pytest.raises(SpoolError):
        read_segment(foreign)
