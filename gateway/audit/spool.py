"""Write-ahead spool: audit records appended to segment files and fsync'd with group commit.

A segment is ``MAGIC`` followed by frames ``<u32 length><u32 crc32(payload)><payload>``. The first
payload is the Arrow schema, every later one an Arrow IPC record batch of up to
:data:`CHUNK_RECORDS` records. Arrow is the spool format because the batches are what the
Parquet converter needs anyway: records are converted once, in bulk, off the event loop.

Group commit: :meth:`Spool.append` only queues the records and returns a future. One commit
thread takes everything queued, writes it and fsyncs once; the futures of every record in that
write resolve after the fsync. While it syncs, the next group gathers. Every frame is fsync'd
before any of its records is acknowledged, so after a crash each acknowledged record lies
before the first torn or corrupt frame, which is where :func:`read_segment` stops.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa

log = logging.getLogger(__name__)

MAGIC = b"PCSPOOL1"
SUFFIX = ".seg"
CHUNK_RECORDS = 512  # converted with the GIL held: ~1-2 ms, the longest the event loop waits for it
RETRY_S = 1.0  # while unhealthy, how often the commit thread probes the spool by itself
_HEADER = struct.Struct("<II")


class SpoolError(Exception):
    """A file in the spool directory is not a spool segment."""


class InvalidRecord(ValueError):
    """A record does not fit the audit schema: a bug in the code that built it."""


@dataclass(frozen=True)
class RecordEncoder:
    """Turns record dicts into Arrow batches, refusing missing or mistyped values."""

    schema: pa.Schema
    struct_type: pa.StructType = field(init=False)
    required: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "struct_type", pa.struct(self.schema))
        object.__setattr__(self, "required", tuple(i for i, f in enumerate(self.schema) if not f.nullable))
        pa.array([], type=self.struct_type)  # pyarrow's one-time time zone set-up (~0.3 s): at start, not on a request

    def encode(self, records: Sequence[Mapping]) -> pa.RecordBatch:
        try:
            array = pa.array(records, type=self.struct_type)
        except (TypeError, ValueError, pa.ArrowException) as exc:
            raise InvalidRecord(f"audit record does not fit the schema: {exc}") from None
        batch = pa.RecordBatch.from_struct_array(array)
        for i in self.required:
            if batch.column(i).null_count:
                raise InvalidRecord(f"audit record without a value for {self.schema.names[i]!r}")
        return batch


def new_segment_id() -> str:
    """Time-ordered and unique per instance, even across restarts with a clock that went back."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}-{secrets.token_hex(3)}"


def fsync_dir(path: Path) -> None:
    """Make a directory entry (a created, renamed or deleted file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _frame(payload: pa.Buffer | bytes) -> list:
    return [_HEADER.pack(len(payload), zlib.crc32(payload)), payload]


class SegmentWriter:
    """One open segment. ``synced`` is the size known to be on disk: nothing past it was acked."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.opened_at = time.monotonic()
        self.size = self.synced = 0
        header = [MAGIC, *_frame(schema.serialize())]
        self.header_size = sum(len(part) for part in header)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            self.write(header)
            self.sync()
            fsync_dir(path.parent)  # the segment's name must survive a crash before any ack
        except OSError:
            self.abandon()
            raise

    @property
    def has_records(self) -> bool:
        return self.synced > self.header_size

    def write(self, parts: list) -> int:
        view = memoryview(b"".join(parts))
        total = len(view)
        while view:
            written = os.write(self._fd, view)
            self.size += written
            view = view[written:]
        return total

    def sync(self) -> None:
        os.fsync(self._fd)
        self.synced = self.size

    def close(self) -> None:
        os.close(self._fd)
        if not self.has_records:
            self.path.unlink(missing_ok=True)

    def abandon(self) -> None:
        """After a failed write or sync: cut what was not synced (best effort) and close."""
        try:
            os.ftruncate(self._fd, self.synced)
        except OSError:
            pass  # the reader stops at the torn frame anyway
        try:
            self.close()
        except OSError:
            pass  # an empty segment left behind is dropped when it is converted


def read_segment(path: Path) -> pa.Table | None:
    """Every whole frame of a segment (None if it holds none); a torn tail is logged and dropped.

    The file is read, not memory-mapped: a mapped file truncated underneath, or a read error,
    would kill the process with SIGBUS instead of raising.
    """
    content = pa.py_buffer(path.read_bytes())
    data = memoryview(content)
    if data[:len(MAGIC)] != MAGIC[:len(data)]:
        raise SpoolError(f"{path}: not an audit spool segment")
    payloads = []
    offset, size = len(MAGIC), len(data)
    while offset + _HEADER.size <= size:
        length, crc = _HEADER.unpack_from(data, offset)
        end = offset + _HEADER.size + length
        if end > size or zlib.crc32(data[offset + _HEADER.size:end]) != crc:
            break
        payloads.append(content.slice(offset + _HEADER.size, length))
        offset = end
    if offset < size:
        log.warning("audit spool segment %s: torn tail at byte offset %d (%d bytes dropped); "
                    "recovered the %d whole frames before it", path, offset, size - offset, len(payloads))
    if len(payloads) < 2:
        return None
    schema = pa.ipc.read_schema(payloads[0])
    batches = [pa.ipc.read_record_batch(payload, schema) for payload in payloads[1:]]
    return pa.Table.from_batches(batches, schema=schema)


_Entry = tuple[Sequence[Mapping], asyncio.Future | None]  # no future: the submitter does not wait
_Outcome = tuple[asyncio.Future | None, int, Exception | None]  # (future, number of records, error)


class Spool:
    """Group-commit writer of one instance's spool directory; exactly one process may own it.

    Counters are written by the commit thread only and may be read from anywhere.
    """

    def __init__(self, directory: Path, schema: pa.Schema, *, rotate_s: float, rotate_bytes: int,
                 commit_interval_s: float, on_rotated: Callable[[Path], None],
                 on_lost: Callable[[int, Exception], None] = lambda count, error: None) -> None:
        self.directory = directory
        self._schema = schema
        self._encoder = RecordEncoder(schema)
        self._rotate_s = rotate_s
        self._rotate_bytes = rotate_bytes
        self._commit_interval_s = commit_interval_s
        self._on_rotated = on_rotated
        self._on_lost = on_lost
        self._queue: deque[_Entry] = deque()
        self._wake = threading.Event()
        self._closing = False
        self._segment: SegmentWriter | None = None
        self._thread = threading.Thread(target=self._run, name=f"audit-spool:{directory.name}", daemon=True)
        self.healthy = True
        self.records_written = self.bytes_written = self.syncs = self.failures = 0
        self.flush_seconds_total = 0.0

    def segments(self) -> list[Path]:
        """Segments on disk, oldest first (at start: what an earlier run left behind)."""
        return sorted(self.directory.glob(f"*{SUFFIX}"))

    @property
    def pending(self) -> int:
        """Submits queued for the next group commit."""
        return len(self._queue)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    def append(self, records: Sequence[Mapping], wait: bool = True) -> asyncio.Future | None:
        """Queue records; the future resolves once they are fsync'd (or fails with the error).

        With ``wait=False`` there is no future: records that then cannot be written are
        reported to ``on_lost`` (on the event loop, once per commit).
        """
        future = self._loop.create_future() if wait else None
        self._queue.append((records, future))
        if not self._wake.is_set():  # the thread clears before draining, so no wake-up is lost
            self._wake.set()
        return future

    async def close(self) -> None:
        """Commit everything queued so far, close the segment and stop the thread."""
        self._closing = True
        self._wake.set()
        await asyncio.to_thread(self._thread.join)

    # --- commit thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self._timeout())
            self._wake.clear()
            if self._queue and self._commit_interval_s:
                time.sleep(self._commit_interval_s)
            closing = self._closing  # read before draining: nothing queued before close is missed
            if self._queue:
                entries = [self._queue.popleft() for _ in range(len(self._queue))]
                try:
                    self._commit(entries)
                except Exception as exc:  # a bug here must fail the submitters, not hang them
                    log.exception("audit spool: commit failed")
                    self._loop.call_soon_threadsafe(self._settle, [(f, len(r), exc) for r, f in entries])
            elif not self.healthy:
                self._probe()
            if closing or self._rotation_due():
                self._rotate()
            if closing:
                return

    def _timeout(self) -> float | None:
        if not self.healthy:
            return RETRY_S
        if self._segment is not None:
            return max(0.0, self._segment.opened_at + self._rotate_s - time.monotonic())
        return None

    def _rotation_due(self) -> bool:
        segment = self._segment
        return segment is not None and (segment.size >= self._rotate_bytes
                                        or time.monotonic() - segment.opened_at >= self._rotate_s)

    def _encode(self, records: Sequence[Mapping]) -> list[pa.RecordBatch]:
        batches = []
        for start in range(0, len(records), CHUNK_RECORDS):
            batches.append(self._encoder.encode(records[start:start + CHUNK_RECORDS]))
            time.sleep(0)  # hand the GIL to the event loop between chunks, not after a switch interval
        return batches

    def _encode_entries(self, entries: list[_Entry]) -> tuple[list[pa.RecordBatch], list[_Entry], list[_Outcome]]:
        """Batches of the valid entries, those entries, and the outcomes of the invalid ones."""
        try:
            records = entries[0][0] if len(entries) == 1 else [r for recs, _ in entries for r in recs]
            return self._encode(records), entries, []
        except InvalidRecord:
            pass  # find the submits at fault; the others in the group are still written
        batches, accepted, rejected = [], [], []
        for entry in entries:
            try:
                batches += self._encode(entry[0])
                accepted.append(entry)
            except InvalidRecord as exc:
                rejected.append((entry[1], len(entry[0]), exc))
        return batches, accepted, rejected

    def _commit(self, entries: list[_Entry]) -> None:
        batches, accepted, outcomes = self._encode_entries(entries)
        error: OSError | None = None
        if batches:
            parts = [part for batch in batches for part in _frame(batch.serialize())]
            started = time.perf_counter()
            try:
                segment = self._segment or self._open()
                written = segment.write(parts)
                segment.sync()
            except OSError as exc:
                error = exc
                self._fail(exc)
            else:
                self.flush_seconds_total += time.perf_counter() - started
                self.syncs += 1
                self.bytes_written += written
                self.records_written += sum(batch.num_rows for batch in batches)
                self._recovered()
        outcomes += [(future, len(records), error) for records, future in accepted
                     if future is not None or error is not None]
        if outcomes:
            self._loop.call_soon_threadsafe(self._settle, outcomes)

    def _settle(self, outcomes: list[_Outcome]) -> None:
        """On the event loop: resolve the waiting submitters, report what unwaited ones lost."""
        lost, reason = 0, None
        for future, count, error in outcomes:
            if future is None:
                lost, reason = lost + count, error
            elif not future.done():  # a submitter cancelled meanwhile (client gone) is skipped
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
        if lost:
            self._on_lost(lost, reason)

    def _open(self) -> SegmentWriter:
        self._segment = SegmentWriter(self.directory / f"{new_segment_id()}{SUFFIX}", self._schema)
        return self._segment

    def _fail(self, exc: OSError) -> None:
        self.failures += 1
        if self.healthy:
            log.error("audit spool %s cannot be written: %s; refusing records until it can", self.directory, exc)
        self.healthy = False
        segment, self._segment = self._segment, None
        if segment is not None:
            segment.abandon()
            if segment.has_records:
                self._on_rotated(segment.path)

    def _recovered(self) -> None:
        if not self.healthy:
            log.warning("audit spool %s is writable again", self.directory)
        self.healthy = True

    def _probe(self) -> None:
        """While unhealthy and idle: try a fresh segment, so readiness recovers without traffic."""
        try:
            self._open()
        except OSError:
            return
        self._recovered()

    def _rotate(self) -> None:
        segment, self._segment = self._segment, None
        if segment is None:
            return
        try:
            segment.close()
        except OSError as exc:
            log.error("audit spool: closing %s failed: %s", segment.path, exc)
        if segment.has_records:
            self._on_rotated(segment.path)
