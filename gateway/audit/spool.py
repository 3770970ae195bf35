"""Write-ahead spool: audit records appended to segment files and fsync'd with group commit.

A segment is ``MAGIC`` followed by frames ``<u32 length><u32 crc32(payload)><payload>``; a
payload is a kind byte and its data: the Arrow schema first, then either an Arrow IPC record
batch or JSON lines, one per converted chunk of records.

Where the work happens is chosen for the GIL, which the event loop and the threads share:

- the event loop converts records, one chunk of at most :data:`CHUNK_RECORDS` per callback
  (about a millisecond), so it neither waits for the lock nor holds it long;
- the commit thread only checksums, writes and fsyncs, which release the lock, so an
  acknowledgement never waits for the interpreter to be handed over;
- records are converted as soon as the commit thread is idle, else once a full chunk is pending:
  while it fsyncs, the next group gathers.

Two encodings, because a conversion to Arrow has a fixed cost (~0.15 ms) that only larger chunks
repay: a chunk of :data:`ARROW_MIN_RECORDS` or more becomes an Arrow batch (about 3 µs a record,
and Parquet conversion is then columnar work in C++); a smaller one, typical of single-record
submits at moderate load, becomes validated JSON lines (about 6 µs a record, no fixed cost),
parsed into Arrow for the whole segment at conversion by pyarrow's C++ reader, without the GIL.

Group commit: the commit thread takes every converted chunk, writes them and fsyncs once; the
futures of all their records resolve after that fsync. Every frame is fsync'd before any of its
records is acknowledged, so after a crash each acknowledged record lies before the first torn or
corrupt frame, which is where :func:`read_segment` stops.
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

import orjson
import pyarrow as pa
import pyarrow.json as pa_json

log = logging.getLogger(__name__)

MAGIC = b"PCSPOOL3"  # 1: Arrow frames without kinds, 2: JSON lines only
SUFFIX = ".seg"
CHUNK_RECORDS = 256  # converted per event-loop callback: ~1 ms, the longest that callback runs
ARROW_MIN_RECORDS = 48  # where the fixed cost of an Arrow conversion starts to pay off
RETRY_S = 1.0  # while unhealthy, how often the commit thread probes the spool by itself
_HEADER = struct.Struct("<II")
SCHEMA, ARROW, JSON = b"S", b"A", b"J"  # frame kinds
_FRAMES_PER_TABLE = 64  # read_segment: ~2 ms of decoding between GIL hand-overs
# Segment files are read and deleted in steps: one system call over 64 MiB keeps a core busy for
# tens of milliseconds (copying, or freeing and trimming blocks), and the event loop may need it.
_READ_STEP = 2 << 20
_TRUNCATE_STEP = 8 << 20


class SpoolError(Exception):
    """A file in the spool directory is not a segment this version can read."""


class InvalidRecord(ValueError):
    """A record does not fit the audit schema: a bug in the code that built it."""


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


def _json_schema(schema: pa.Schema) -> pa.Schema:
    """In JSON lines timestamps are integers (µs since the epoch, UTC); the reader casts them back."""
    return pa.schema([pa.field(f.name, pa.int64() if pa.types.is_timestamp(f.type) else f.type) for f in schema])


@dataclass(frozen=True)
class RecordEncoder:
    """Turns record dicts into Arrow batches or JSON lines, refusing missing or mistyped values.

    Both encodings accept the same records: keys outside the schema are ignored, a missing
    nullable value is null, a missing required one is refused.
    """

    schema: pa.Schema
    struct_type: pa.StructType = field(init=False)
    required: tuple[int, ...] = field(init=False)
    checks: tuple = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "struct_type", pa.struct(self.schema))
        object.__setattr__(self, "required", tuple(i for i, f in enumerate(self.schema) if not f.nullable))
        object.__setattr__(self, "checks", tuple((f.name, *_kind(f.type), f.nullable) for f in self.schema))
        pa.array([], type=self.struct_type)  # pyarrow's one-time time zone set-up (~0.3 s): at start, not on a request

    def arrow(self, records: Sequence[Mapping]) -> pa.RecordBatch:
        try:
            array = pa.array(records, type=self.struct_type)
        except (TypeError, ValueError, pa.ArrowException) as exc:
            raise InvalidRecord(f"audit record does not fit the schema: {exc}") from None
        batch = pa.RecordBatch.from_struct_array(array)
        for i in self.required:
            if batch.column(i).null_count:
                raise InvalidRecord(f"audit record without a value for {self.schema.names[i]!r}")
        return batch

    def json_lines(self, records: Sequence[Mapping]) -> bytes:
        """Checked here, value by value: the C++ reader at conversion must not meet a bad one."""
        lines = []
        for record in records:
            for name, kinds, low, high, label, nullable in self.checks:
                value = record.get(name)
                if value is None:
                    if not nullable:
                        raise InvalidRecord(f"audit record without a value for {name!r}")
                elif type(value) not in kinds or (low is not None and not low <= value <= high) or (
                        label == "list<string>" and not all(type(item) is str for item in value)):
                    raise InvalidRecord(f"audit record field {name!r} must be {label}, got {value!r:.60}")
            lines.append(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        return b"".join(lines)


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


def _frame(kind: bytes, data: pa.Buffer | bytes) -> list:
    return [_HEADER.pack(1 + len(data), zlib.crc32(data, zlib.crc32(kind))), kind, data]


class SegmentWriter:
    """One open segment. ``synced`` is the size known to be on disk: nothing past it was acked."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.opened_at = time.monotonic()
        self.size = self.synced = 0
        header = [MAGIC, *_frame(SCHEMA, schema.serialize())]
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


def _read(path: Path) -> pa.Buffer:
    fd = os.open(path, os.O_RDONLY)
    try:
        content = pa.allocate_buffer(os.fstat(fd).st_size)
        view, offset = memoryview(content), 0
        while offset < len(view) and (step := os.readv(fd, [view[offset:offset + _READ_STEP]])):
            offset += step
            time.sleep(0)  # hand the GIL over: the event loop may have woken during the read
    finally:
        os.close(fd)
    return content.slice(0, offset)


def delete_segment(path: Path) -> None:
    """Delete a converted segment, shrinking it in steps first (see _TRUNCATE_STEP).

    No directory fsync: a segment that reappears after a crash is replayed, and its files are
    already listed, so the replay adds nothing; the fsync would only wait for the journal.
    """
    for size in range(path.stat().st_size - _TRUNCATE_STEP, 0, -_TRUNCATE_STEP):
        os.truncate(path, size)
        time.sleep(0)
    path.unlink()


def read_segment(path: Path) -> pa.Table | None:
    """Every whole frame of a segment (None if it holds none); a torn tail is logged and dropped.

    It runs in a thread beside the event loop, so it holds the GIL as little as it can: the file
    is read in steps into an Arrow buffer (freed without the GIL, unlike a 64 MiB ``bytes``) and
    the GIL is handed over every few frames. The file is not memory-mapped: a mapped file
    truncated underneath, or a read error, would kill the process with SIGBUS instead of raising.
    """
    content = _read(path)
    data = memoryview(content)
    if data[:len(MAGIC)] != MAGIC[:len(data)]:
        raise SpoolError(f"{path}: not an audit spool segment")
    frames: dict[bytes, list[pa.Buffer]] = {SCHEMA: [], ARROW: [], JSON: []}
    offset, size = len(MAGIC), len(data)
    while offset + _HEADER.size + 1 <= size:
        length, crc = _HEADER.unpack_from(data, offset)
        end = offset + _HEADER.size + length
        if end > size or zlib.crc32(data[offset + _HEADER.size:end]) != crc:
            break
        kind = bytes(data[offset + _HEADER.size:offset + _HEADER.size + 1])
        if kind not in frames:
            raise SpoolError(f"{path}: unknown frame kind {kind!r} at byte offset {offset}")
        frames[kind].append(content.slice(offset + _HEADER.size + 1, length - 1))
        offset = end
    if offset < size:
        log.warning("audit spool segment %s: torn tail at byte offset %d (%d bytes dropped); "
                    "recovered the whole frames before it", path, offset, size - offset)
    if not frames[SCHEMA] or not (frames[ARROW] or frames[JSON]):
        return None
    schema = pa.ipc.read_schema(frames[SCHEMA][0])
    tables = []
    for start in range(0, len(frames[ARROW]), _FRAMES_PER_TABLE):
        batches = [pa.ipc.read_record_batch(payload, schema)
                   for payload in frames[ARROW][start:start + _FRAMES_PER_TABLE]]
        # Combined (in C++, without the GIL) and dropped a few at a time: a table of a thousand
        # small chunks takes ~20 ms to free, with the GIL held.
        tables.append(pa.Table.from_batches(batches, schema=schema).combine_chunks())
        time.sleep(0)  # let the event loop have the GIL now, not after a switch interval
    if frames[JSON]:
        tables.append(_from_json(frames[JSON], schema))
    return pa.concat_tables(tables)


def _from_json(payloads: list[pa.Buffer], schema: pa.Schema) -> pa.Table:
    """Parse all JSON-lines frames at once, in C++ without the GIL."""
    joined = pa.allocate_buffer(sum(p.size for p in payloads))
    view, offset = memoryview(joined), 0
    for i, payload in enumerate(payloads):
        view[offset:offset + payload.size] = memoryview(payload)
        offset += payload.size
        if i % 256 == 0:
            time.sleep(0)
    options = pa_json.ParseOptions(explicit_schema=_json_schema(schema), unexpected_field_behavior="ignore")
    table = pa_json.read_json(pa.BufferReader(joined), parse_options=options,
                              read_options=pa_json.ReadOptions(use_threads=False, block_size=1 << 24))
    return table.select(schema.names).cast(schema)


_Entry = tuple[Sequence[Mapping], asyncio.Future | None]  # no future: the submitter does not wait


@dataclass(frozen=True)
class _Chunk:
    """Converted records on their way to the commit thread."""

    kind: bytes  # ARROW or JSON
    data: pa.Buffer | bytes
    records: int
    futures: tuple[asyncio.Future, ...]
    unwaited: int  # records whose submitters did not wait: a failure is reported to on_lost


class Spool:
    """Group-commit writer of one instance's spool directory; exactly one process may own it.

    ``append`` and the conversion run on the event loop; counters are written by the commit
    thread only and may be read from anywhere.
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
        # Event-loop side.
        self._pending: deque[_Entry] = deque()
        self._pending_records = 0
        self._unacked_records = 0  # pending, converted or being written
        self._converting = False  # a conversion callback is scheduled
        self._in_flight = 0  # chunks handed to the commit thread and not yet committed
        # Shared with the commit thread (deque appends and pops are atomic).
        self._chunks: deque[_Chunk] = deque()
        self._wake = threading.Event()
        self._closing = False
        # Commit thread side.
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
        """Records submitted and not yet committed."""
        return self._unacked_records

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    def append(self, records: Sequence[Mapping], wait: bool = True) -> asyncio.Future | None:
        """Queue records; the future resolves once they are fsync'd (or fails with the error).

        With ``wait=False`` there is no future: records that then cannot be written are
        reported to ``on_lost``. A submit's records are converted together: keep submits to a
        few hundred records so that no callback runs long.
        """
        future = self._loop.create_future() if wait else None
        self._pending.append((records, future))
        self._pending_records += len(records)
        self._unacked_records += len(records)
        self._schedule()
        return future

    async def close(self) -> None:
        """Commit everything submitted so far, close the segment and stop the thread."""
        while self._pending:
            self._convert()
        self._closing = True
        self._wake.set()
        await asyncio.to_thread(self._thread.join)

    # --- event loop --------------------------------------------------------------------------

    def _schedule(self) -> None:
        if self._converting or not self._pending:
            return
        if self._in_flight == 0 or self._pending_records >= CHUNK_RECORDS:
            self._converting = True
            self._loop.call_soon(self._convert)  # after this iteration's other submits have queued

    def _convert(self) -> None:
        """Convert up to one chunk of pending records and hand it to the commit thread."""
        self._converting = False
        if not self._pending:  # close() converted them already
            return
        entries, count = [], 0
        while self._pending and (not entries or count + len(self._pending[0][0]) <= CHUNK_RECORDS):
            entries.append(self._pending.popleft())
            count += len(entries[-1][0])
        self._pending_records -= count
        kind = ARROW if count >= ARROW_MIN_RECORDS else JSON
        data, entries = self._encode(entries, kind)
        if entries:
            futures = tuple(future for _, future in entries if future is not None)
            unwaited = sum(len(records) for records, future in entries if future is None)
            records = sum(len(records) for records, _ in entries)
            self._chunks.append(_Chunk(kind, data, records, futures, unwaited))
            self._in_flight += 1
            if not self._wake.is_set():  # the thread clears before draining, so no wake-up is lost
                self._wake.set()
        self._schedule()

    def _encode(self, entries: list[_Entry], kind: bytes) -> tuple[pa.Buffer | bytes, list[_Entry]]:
        """The data of the valid entries; the invalid ones are refused here, before any I/O."""
        encode = self._arrow if kind == ARROW else self._encoder.json_lines
        try:
            return encode(entries[0][0] if len(entries) == 1 else [r for recs, _ in entries for r in recs]), entries
        except InvalidRecord:
            pass  # find the submits at fault; the others are still written
        valid = []
        for records, future in entries:
            try:
                encode(records)
                valid.append((records, future))
            except InvalidRecord as exc:
                self._unacked_records -= len(records)
                if future is None:
                    self._on_lost(len(records), exc)
                else:
                    future.set_exception(exc)
        return (self._encode(valid, kind)[0] if valid else b""), valid

    def _arrow(self, records: Sequence[Mapping]) -> pa.Buffer:
        return self._encoder.arrow(records).serialize()

    def _committed(self, chunks: list[_Chunk], error: Exception | None) -> None:
        """Resolve the submitters of a commit; report what unwaited ones lost."""
        self._in_flight -= len(chunks)
        lost = 0
        for chunk in chunks:
            self._unacked_records -= chunk.records
            lost += chunk.unwaited
            for future in chunk.futures:
                if future.done():  # cancelled meanwhile (client gone)
                    continue
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
        if error is not None and lost:
            self._on_lost(lost, error)
        self._schedule()

    # --- commit thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self._timeout())
            self._wake.clear()
            if self._chunks and self._commit_interval_s:
                time.sleep(self._commit_interval_s)
            closing = self._closing  # read before draining: close() converts everything first
            if self._chunks:
                chunks = [self._chunks.popleft() for _ in range(len(self._chunks))]
                try:
                    error = self._write(chunks)
                except Exception as exc:  # a bug here must fail the submitters, not hang them
                    log.exception("audit spool: commit failed")
                    error = exc
                self._loop.call_soon_threadsafe(self._committed, chunks, error)
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

    def _write(self, chunks: list[_Chunk]) -> OSError | None:
        parts = [part for chunk in chunks for part in _frame(chunk.kind, chunk.data)]
        started = time.perf_counter()
        try:
            segment = self._segment or self._open()
            written = segment.write(parts)
            segment.sync()
        except OSError as exc:
            self._fail(exc)
            return exc
        self.flush_seconds_total += time.perf_counter() - started
        self.syncs += 1
        self.bytes_written += written
        self.records_written += sum(chunk.records for chunk in chunks)
        self._recovered()
        return None

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
