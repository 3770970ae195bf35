from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from gateway.audit import AuditUnavailable
from gateway.audit import spool as spool_module
from gateway.audit.manifest import verify
from gateway.audit.records import InvalidRecord
from gateway.audit.writer import DurableSink, SinkConfig
from gateway.config import Settings
from tests.audit.conftest import make_record, make_segment
from tests.conftest import fill, trail_ids, wait_until

REPO = Path(__file__).resolve().parents[2]


def test_config_from_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, instance="h1", audit_ack="buffered", audit_rotate_s=5.0)
    config = SinkConfig.from_settings(settings, worker=3)
    assert config.spool_dir == tmp_path / "spool" / "h1-w3" and config.audit_dir == tmp_path / "audit"
    assert (config.instance, config.ack, config.rotate_s) == ("h1-w3", "buffered", 5.0)


async def test_durable_submits_end_up_in_parquet_once(make_sink, config, key) -> None:
    records = [make_record(i) for i in range(500)]
    async with make_sink() as sink:
        await asyncio.gather(*(sink.submit([r]) for r in records[:400]))
        await sink.submit(records[400:])
        assert sink.records_written == 500 and sink.syncs < 100 and sink.healthy()
    assert sorted(trail_ids(config.audit_dir)) == sorted(r.decision_id for r in records)
    assert verify(config.audit_dir, key.public_key()).ok
    assert not list(config.spool_dir.glob("*.seg")), "close converts everything"
    assert not sink.healthy()
    with pytest.raises(AuditUnavailable):
        await sink.submit([make_record()])


async def test_buffered_acks_before_the_fsync_and_close_flushes(make_sink, config, monkeypatch) -> None:
    real_sync = spool_module.SegmentWriter.sync
    entered, release = threading.Event(), threading.Event()

    def held_sync(self) -> None:  # the commit thread waits here until the test lets the disk finish
        entered.set()
        assert release.wait(30), "never released"
        real_sync(self)

    monkeypatch.setattr(spool_module.SegmentWriter, "sync", held_sync)
    async with make_sink(ack="buffered") as sink:
        try:
            await asyncio.wait_for(sink.submit([make_record(1)]), 30)  # acknowledged, every fsync held
        finally:
            release.set()  # close flushes
    entered.clear(), release.clear()
    async with make_sink(ack="durable") as sink:
        submit = asyncio.ensure_future(sink.submit([make_record(2)]))
        assert await asyncio.to_thread(entered.wait, 30), "the record never reached an fsync"
        await asyncio.sleep(0.2)  # room for a premature ack to arrive
        assert not submit.done(), "acknowledged while its fsync had not returned"
        release.set()
        await asyncio.wait_for(submit, 30)
    assert len(trail_ids(config.audit_dir)) == 2


async def test_segments_rotate_and_convert_while_running(make_sink, config) -> None:
    async with make_sink(rotate_bytes=30_000, rotate_s=0.3) as sink:
        for i in range(6):
            await sink.submit([make_record(i * 100 + j) for j in range(50)])
        await wait_until(lambda: len(trail_ids(config.audit_dir)) == 300)
    files = list(config.audit_dir.glob("date=*/hour=*/*.parquet"))
    assert len(files) == sink.files_written >= 3
    assert all(f.name.startswith("test-w0-") for f in files)
    assert sum(pq.ParquetFile(f).metadata.num_rows for f in files) == 300


async def test_start_converts_the_segments_an_earlier_run_left(make_sink, config, key) -> None:
    records = [make_record(i) for i in range(20)]
    segment = await make_segment(config.spool_dir, [records[:5], records[5:]])
    with open(segment, "ab") as f:
        f.write(b"\x10\x00\x00\x00torn")  # a frame header whose payload never made it to disk
    async with make_sink():
        pass
    assert sorted(trail_ids(config.audit_dir)) == sorted(r.decision_id for r in records)
    assert not segment.exists() and verify(config.audit_dir, key.public_key()).ok


async def test_one_instance_one_process(make_sink) -> None:
    async with make_sink():
        with pytest.raises(RuntimeError, match="own instance id"):
            await make_sink().start()


async def test_an_invalid_record_is_refused_not_stored(make_sink, config) -> None:
    async with make_sink() as sink:
        with pytest.raises(InvalidRecord):
            await sink.submit([make_record(latency_us="fast")])
        await sink.submit([make_record()])
    async with make_sink(ack="buffered") as sink:
        await sink.submit([make_record(quantity=None)])
        await wait_until(lambda: sink.lost_records == 1)
    assert len(trail_ids(config.audit_dir)) == 1


async def test_duckdb_reads_while_the_writer_writes(make_sink, config) -> None:
    pattern = f"{config.audit_dir}/date=*/hour=*/*.parquet"
    counts: list[int] = []
    errors: list[Exception] = []
    stop = threading.Event()

    def reader() -> None:
        connection = duckdb.connect()
        while not stop.is_set():
            try:
                query = f"SELECT count(*) FROM read_parquet('{pattern}', hive_partitioning=true)"
                counts.append(connection.execute(query).fetchone()[0])
            except duckdb.IOException as exc:
                if "No files found" not in str(exc):
                    errors.append(exc)
            except Exception as exc:  # a half-written file would surface here
                errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        async with make_sink(rotate_bytes=40_000, rotate_s=0.2) as sink:
            for i in range(40):
                await sink.submit([make_record(i * 100 + j) for j in range(50)])
                await asyncio.sleep(0.02)
                if i == 19:  # half-way: some files are in place while more are still coming
                    await wait_until(lambda: sink.files_written >= 2 and counts and counts[-1] > 0)
    finally:
        stop.set()
        thread.join()
    assert not errors, errors[:3]
    assert counts == sorted(counts), "files only ever appear whole"
    assert any(0 < n < 2000 for n in counts), "the reader ran while the writer wrote"
    assert len(trail_ids(config.audit_dir)) == 2000


async def test_a_full_disk_fails_closed_then_recovers(small_disk: Path, make_sink, config, key) -> None:
    sink = make_sink(spool_dir=small_disk / "test-w0")
    acked = []
    async with sink:
        first = [make_record(i) for i in range(10)]
        await sink.submit(first)
        acked += first
        ballast = fill(small_disk)
        with pytest.raises(AuditUnavailable, match="No space left"):
            for i in range(100):  # the segment's last free page may take a few more records
                batch = [make_record(1000 + i * 10 + j) for j in range(10)]
                await sink.submit(batch)
                acked += batch
        assert not sink.healthy() and sink.failures >= 1
        ballast.unlink()
        retry = [make_record(5000)]
        await sink.submit(retry)
        acked += retry
        assert sink.healthy()
    assert sorted(trail_ids(config.audit_dir)) == sorted(r.decision_id for r in acked)
    assert verify(config.audit_dir, key.public_key()).ok


async def test_a_full_disk_recovers_without_traffic(small_disk: Path, make_sink) -> None:
    async with make_sink(spool_dir=small_disk / "test-w0") as sink:
        ballast = fill(small_disk)
        with pytest.raises(AuditUnavailable):
            await sink.submit([make_record()])
        ballast.unlink()
        await wait_until(sink.healthy, what="the spool to be writable again")


async def test_on_failure_allow_counts_what_it_loses(small_disk: Path, make_sink) -> None:
    async with make_sink(spool_dir=small_disk / "test-w0", on_failure="allow") as sink:
        fill(small_disk)
        await sink.submit([make_record(i) for i in range(3)])
        assert sink.lost_records == 3 and not sink.healthy()


async def test_buffered_records_lost_to_a_full_disk_are_counted(small_disk: Path, make_sink) -> None:
    async with make_sink(spool_dir=small_disk / "test-w0", ack="buffered") as sink:
        fill(small_disk)
        await sink.submit([make_record(i) for i in range(4)])  # acknowledged before the write fails
        await wait_until(lambda: sink.lost_records == 4)
        with pytest.raises(AuditUnavailable):  # once known unhealthy, buffered submits wait and fail
            await sink.submit([make_record()])


def _fail_once(monkeypatch, target: object, name: str, error: int) -> None:
    """Make ``target.name`` raise OSError(error) on its next call only."""
    real = getattr(target, name)
    calls = []

    def flaky(*args: object):
        calls.append(args)
        if len(calls) == 1:
            raise OSError(error, os.strerror(error))
        return real(*args)

    monkeypatch.setattr(target, name, flaky)


@pytest.mark.parametrize("target, name, error", [
    (spool_module.SegmentWriter, "write", errno.EIO),
    (spool_module.SegmentWriter, "sync", errno.EIO),
    (spool_module.Spool, "_open", errno.EACCES),
], ids=["write-EIO", "fsync-EIO", "open-EACCES"])
async def test_spool_faults_fail_closed_and_lose_nothing_acked(make_sink, config, key, monkeypatch,
                                                              target, name, error) -> None:
    async with make_sink(rotate_bytes=1) as sink:  # every commit rotates: the next one opens a segment
        before = [make_record(i) for i in range(5)]
        await sink.submit(before)
        _fail_once(monkeypatch, target, name, error)
        with pytest.raises(AuditUnavailable, match=os.strerror(error)):
            await sink.submit([make_record(100)])
        assert not sink.healthy() and sink.failures == 1
        after = [make_record(200 + i) for i in range(5)]
        await sink.submit(after)
        assert sink.healthy()
    stored = trail_ids(config.audit_dir)
    assert sorted(stored) == sorted(r.decision_id for r in before + after), "acked once, refused never"
    assert verify(config.audit_dir, key.public_key()).ok


CHILD = """
import asyncio, sys
from pathlib import Path
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gateway.audit.writer import DurableSink, SinkConfig
from tests.audit.conftest import make_record, make_segment

root, key = Path(sys.argv[1]), Ed25519PrivateKey.from_private_bytes(bytes.fromhex(sys.argv[2]))

async def one(sink, i):
    batch = [make_record(i * 3 + k) for k in range(3)]
    await sink.submit(batch)
    sys.stdout.write("".join(r.decision_id + "\\n" for r in batch))
    sys.stdout.flush()

async def main():
    config = SinkConfig(root / "spool" / "w0", root / "audit", "w0", rotate_bytes=30_000, rotate_s=0.2)
    async with DurableSink(config, key) as sink:
        i = 0
        while True:
            await asyncio.gather(*(one(sink, i + k) for k in range(16)))
            i += 16

asyncio.run(main())
"""


def _run_and_kill(root: Path, key_hex: str, acked: int) -> list[str]:
    """Run a writer process, SIGKILL it once it has acknowledged ``acked`` records."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(root), key_hex], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    ids = []
    while len(ids) < acked:
        line = child.stdout.readline()
        assert line, "the writer process died"
        ids.append(line.strip())
    os.kill(child.pid, signal.SIGKILL)
    ids += [line.strip() for line in child.stdout if line.endswith("\n")]  # acked before the kill
    child.wait()
    return ids


@pytest.mark.slow
async def test_every_acked_record_survives_sigkill_exactly_once(tmp_path: Path, key) -> None:
    key_hex = key.private_bytes_raw().hex()
    acked = _run_and_kill(tmp_path, key_hex, 1500)
    acked += _run_and_kill(tmp_path, key_hex, 1500)  # restarts on the leftovers, then dies again
    async with DurableSink(SinkConfig(tmp_path / "spool" / "w0", tmp_path / "audit", "w0"), key):
        pass  # recovery only
    stored = trail_ids(tmp_path / "audit")
    assert len(stored) == len(set(stored)), "a record was stored twice"
    missing = set(acked) - set(stored)
    assert not missing, f"{len(missing)} acknowledged records lost"
    assert verify(tmp_path / "audit", key.public_key()).ok


async def test_an_unreadable_segment_is_set_aside_not_retried(make_sink, config, caplog) -> None:
    config.spool_dir.mkdir(parents=True)
    foreign = config.spool_dir / "20260101T000000000000-abcdef.seg"
    foreign.write_bytes(b"PCSPOOL9 written by some other version")
    async with make_sink() as sink:
        await sink.submit([make_record()])
    assert not foreign.exists() and foreign.with_suffix(".unreadable").exists()
    assert sink.conversion_failures == 1 and f"set aside as {foreign.with_suffix('.unreadable')}" in caplog.text
    assert len(trail_ids(config.audit_dir)) == 1
