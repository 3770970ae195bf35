"""Write-ahead spool: audit records appended to segment files and fsync'd with group commit.

Where the work happens is chosen for the GIL, which the event loop and the threads share:

- the event loop converts records (:mod:`gateway.audit.records`), one chunk of at most
  :data:`CHUNK_RECORDS` per callback (about a millisecond), so it neither waits for the lock nor
  holds it long; a chunk of :data:`ARROW_MIN_RECORDS` or more becomes an Arrow batch, a smaller
  one (typical of single-record submits at moderate load) validated JSON lines;
- the commit thread only checksums, writes and fsyncs (:mod:`gateway.audit.segment`), which
  release the lock, so an acknowledgement never waits for the interpreter to be handed over;
- records are converted as soon as the commit thread is idle, else once a full chunk is pending:
  while it fsyncs, the next group gathers.

Group commit: the commit thread takes every converted chunk, writes them and fsyncs once; the
futures of all their records resolve after that fsync.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from gateway.audit.records import InvalidRecord, RecordEncoder
from gateway.audit.schema import AuditRecord
from gateway.audit.segment import ARROW, JSON, SUFFIX, SegmentWriter, frame, new_segment_id

log = logging.getLogger(__name__)

CHUNK_RECORDS = 512  # converted per event-loop callback: ~0.7 ms, the longest that callback runs
ARROW_MIN_RECORDS = 24  # where the fixed cost of an Arrow conversion starts to pay off (measured)
RETRY_S = 1.0  # while unhealthy, how often the commit thread probes the spool by itself


_Entry = tuple[Sequence[AuditRecord], asyncio.Future | None]  # no future: the submitter does not wait


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
                 on_lost: Callable[[int, Exception], None] = lambda count, error: None,
                 on_recovered: Callable[[], None] = lambda: None) -> None:
        self.directory = directory
        self._schema = schema
        self._encoder = RecordEncoder(schema)
        self._rotate_s = rotate_s
        self._rotate_bytes = rotate_bytes
        self._commit_interval_s = commit_interval_s
        self._on_rotated = on_rotated
        self._on_lost = on_lost
        self._on_recovered = on_recovered  # called by the commit thread when a failing spool works again
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

    def append(self, records: Sequence[AuditRecord], wait: bool = True) -> asyncio.Future | None:
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

    def _arrow(self, records: Sequence[AuditRecord]) -> pa.Buffer:
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
        parts = [part for chunk in chunks for part in frame(chunk.kind, chunk.data)]
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
            self._on_recovered()

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
