"""Write-ahead spool: audit records appended to segment files and fsync'd with group commit.

A segment is ``MAGIC`` followed by frames ``<u32 length><u32 crc32(payload)><payload>``; each
payload is one group commit's records as newline-delimited JSON.

Where the work happens is chosen for the GIL. :meth:`Spool.append` validates each record against
the schema and encodes it with orjson on the event loop (a few µs, predictable). The commit
thread then only writes and fsyncs, which release the GIL, so an acknowledgement never waits for
the interpreter to be handed over (measured: 64 concurrent single-record submitters were acked
about five times faster, p50 1.3 ms instead of 8 ms, than when the thread built Arrow batches).
Parsing the JSON into Arrow happens once per segment, at conversion, in pyarrow's C++ JSON
reader, which runs without the GIL.

Group commit: :meth:`Spool.append` queues the encoded records and returns a future. One commit
thread takes everything queued, writes it and fsyncs once; the futures of every record in that
write resolve after the fsync. While it syncs, the next group gathers. Every frame is fsync'd
before any of its records is acknowledged, so after a crash each acknowledged record lies
before the first torn or corrupt frame, which is where :func:`read_segment` stops.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.json as pa_json

from gateway.audit.schema import AUDIT_SCHEMA

log = logging.getLogger(__name__)

MAGIC = b"PCSPOOL2"
SUFFIX = ".seg"
RETRY_S = 1.0  # while unhealthy, how often the commit thread probes the spool by itself
_HEADER = struct.Struct("<II")


class SpoolError(Exception):
    """A file in the spool directory is not a spool segment."""


class InvalidRecord(ValueError):
    """A record does not fit the audit schema: a bug in the code that built it."""


class RecordEncoder:
    """Validates record dicts against the audit schema and encodes them as JSON lines; decodes
    whole segments back into an Arrow table of exactly that schema."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self._names = frozenset(schema.names)
        self._checks = tuple((f.name, *_kind(f.type), f.nullable) for f in schema)
        # On disk timestamps are integers (µs since the epoch, UTC); the reader casts them back.
        self._json_schema = pa.schema([pa.field(f.name, pa.int64() if pa.types.is_timestamp(f.type) else f.type)
                                       for f in schema])
        pa.array([], type=pa.struct(schema))  # pyarrow's one-time time zone set-up (~0.3 s): at start, not on a request

    def encode(self, records: Sequence[Mapping]) -> bytes:
        """JSON lines of ``records``; InvalidRecord names the first field that does not fit."""
        lines = []
        for record in records:
            if record.keys() != self._names:
                missing = sorted(self._names - record.keys())
                raise InvalidRecord(f"audit record without a value for {missing[0]!r}" if missing else
                                    f"audit record with unknown field(s) {sorted(record.keys() - self._names)}")
            for name, kinds, low, high, label, nullable in self._checks:
                value = record[name]
                if value is None:
                    if not nullable:
                        raise InvalidRecord(f"audit record without a value for {name!r}")
                elif type(value) not in kinds or (low is not None and not low <= value <= high) or (
                        label == "list<string>" and not all(type(item) is str for item in value)):
                    raise InvalidRecord(f"audit record field {name!r} must be {label}, got {value!r:.60}")
            lines.append(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        return b"".join(lines)

    def decode(self, payloads: Sequence[pa.Buffer | bytes]) -> pa.Table:
        """Parse JSON lines (C++, without the GIL) into a table of the audit schema."""
        data = pa.py_buffer(b"".join(payloads))
        table = pa_json.read_json(pa.BufferReader(data),
                                  read_options=pa_json.ReadOptions(use_threads=False, block_size=1 << 24),
                                  parse_options=pa_json.ParseOptions(explicit_schema=self._json_schema,
                                                                     unexpected_field_behavior="error"))
        return table.select(self.schema.names).cast(self.schema)


def _kind(arrow_type: pa.DataType) -> tuple[tuple[type, ...], int | None, int | None, str]:
    """Python types a value may have, its range, and the name errors use."""
    if pa.types.is_timestamp(arrow_type):
        return (int,), None, None, "integer microseconds since the epoch"
    if pa.types.is_integer(arrow_type):
        bits = arrow_type.bit_width
        return (int,), -(1 << (bits - 1)), (1 << (bits - 1)) - 1, str(arrow_type)
    if pa.types.is_list(arrow_type):
        return (list, tuple), None, None, "list<string>"
    return (str,), None, None, str(arrow_type)


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

    def __init__(self, path: Path) -> None:
        self.path = path
        self.opened_at = time.monotonic()
        self.size = self.synced = 0
        header = [MAGIC]
        self.header_size = len(MAGIC)
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


def read_segment(path: Path, encoder: RecordEncoder | None = None) -> pa.Table | None:
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
    if not payloads:
        return None
    return (encoder or default_encoder()).decode(payloads)


@functools.cache
def default_encoder() -> RecordEncoder:
    return RecordEncoder(AUDIT_SCHEMA)


_Entry = tuple[bytes, int, asyncio.Future | None]  # (JSON lines, records, future); no future: nobody waits
_Outcome = tuple[asyncio.Future | None, int, Exception | None]  # (future, number of records, error)


class Spool:
    """Group-commit writer of one instance's spool directory; exactly one process may own it.

    Counters are written by the commit thread only and may be read from anywhere.
    """

    def __init__(self, directory: Path, schema: pa.Schema, *, rotate_s: float, rotate_bytes: int,
                 commit_interval_s: float, on_rotated: Callable[[Path], None],
                 on_lost: Callable[[int, Exception], None] = lambda count, error: None) -> None:
        self.directory = directory
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
        try:
            encoded = self._encoder.encode(records)
        except InvalidRecord as exc:  # a bug in the code that built the record: refuse only this submit
            if future is None:
                self._loop.call_soon(self._on_lost, len(records), exc)
            else:
                future.set_exception(exc)
            return future
        self._queue.append((encoded, len(records), future))
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
                    self._loop.call_soon_threadsafe(self._settle, [(f, n, exc) for _, n, f in entries])
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

    def _commit(self, entries: list[_Entry]) -> None:
        """Write and fsync one group; runs without the GIL but for a little bookkeeping."""
        payload = entries[0][0] if len(entries) == 1 else b"".join(encoded for encoded, _, _ in entries)
        error: OSError | None = None
        started = time.perf_counter()
        try:
            segment = self._segment or self._open()
            written = segment.write(_frame(payload))
            segment.sync()
        except OSError as exc:
            error = exc
            self._fail(exc)
        else:
            self.flush_seconds_total += time.perf_counter() - started
            self.syncs += 1
            self.bytes_written += written
            self.records_written += sum(count for _, count, _ in entries)
            self._recovered()
        outcomes = [(future, count, error) for _, count, future in entries if future is not None or error is not None]
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
        self._segment = SegmentWriter(self.directory / f"{new_segment_id()}{SUFFIX}")
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
