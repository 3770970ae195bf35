"""The spool segment file: framing, writing, reading back and deleting.

A segment is ``MAGIC`` followed by frames ``<u32 length><u32 crc32(payload)><payload>``; a
payload is a kind byte and its data: the Arrow schema first, then either an Arrow IPC record
batch or JSON lines. Every frame is fsync'd before any of its records is acknowledged, so after
a crash each acknowledged record lies before the first torn or corrupt frame, which is where
:func:`read_segment` stops.
"""
from __future__ import annotations

import logging
import os
import secrets
import struct
import time
import zlib
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pa_json

from gateway.audit.records import json_schema

log = logging.getLogger(__name__)

MAGIC = b"PCSPOOL3"  # 1: Arrow frames without kinds, 2: JSON lines only
SUFFIX = ".seg"
_HEADER = struct.Struct("<II")
SCHEMA, ARROW, JSON = b"S", b"A", b"J"  # frame kinds
_FRAMES_PER_TABLE = 64  # read_segment: ~2 ms of decoding between GIL hand-overs
# Segment files are read and deleted in steps: one system call over 64 MiB keeps a core busy for
# tens of milliseconds (copying, or freeing and trimming blocks), and the event loop may need it.
_READ_STEP = 2 << 20
_TRUNCATE_STEP = 8 << 20


class SpoolError(Exception):
    """A file in the spool directory is not a segment this version can read."""


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


def make_dirs(directory: Path) -> None:
    """Create missing directories durably: a renamed file is only safe if its directory is."""
    if directory.is_dir():
        return
    make_dirs(directory.parent)
    directory.mkdir(exist_ok=True)
    fsync_dir(directory.parent)


def frame(kind: bytes, data: pa.Buffer | bytes) -> list:
    return [_HEADER.pack(1 + len(data), zlib.crc32(data, zlib.crc32(kind))), kind, data]


class SegmentWriter:
    """One open segment. ``synced`` is the size known to be on disk: nothing past it was acked."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.opened_at = time.monotonic()
        self.size = self.synced = 0
        header = [MAGIC, *frame(SCHEMA, schema.serialize())]
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
    options = pa_json.ParseOptions(explicit_schema=json_schema(schema), unexpected_field_behavior="ignore")
    table = pa_json.read_json(pa.BufferReader(joined), parse_options=options,
                              read_options=pa_json.ReadOptions(use_threads=False, block_size=1 << 24))
    return table.select(schema.names).cast(schema)
