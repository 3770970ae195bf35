"""Spool segment -> hive-partitioned Parquet, crash-safe and idempotent (SPEC §5 "Files").

Each file is written under a ``.parquet.tmp`` name (never matched by ``date=*/hour=*/*.parquet``),
fsync'd, renamed into place, its directory fsync'd, and listed in the manifest; only then is the
segment deleted. A crash anywhere in between is repaired by converting the segment again: the
output names depend only on the instance and the segment, so a replay overwrites an unlisted
file or skips one already listed, and no record appears twice.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gateway.audit.manifest import Manifest, sha256_file
from gateway.audit.segment import delete_segment, fsync_dir, make_dirs, read_segment

HOUR_US = 3_600_000_000
ROW_GROUP_ROWS = 1 << 20  # large row groups: long column chunks compress well and scan fast
TMP_SUFFIX = ".tmp"
# Min/max statistics only where they prune: time columns. On strings they cost a quarter of the
# write time and tell nothing about row groups of ~a million mixed records.
STATISTICS = ["ts", "expires_at", "http_status", "latency_us"]
# (Nearly) unique per record: dictionary encoding would be tried and abandoned for every page.
NOT_DICTIONARY = frozenset({"ts", "decision_id", "request_id", "trace_id", "latency_us"})
# Timestamps of records written in order differ by little: stored as deltas they take a few bits
# each instead of eight bytes, and every report that reads ts scans a third less.
ENCODING = {"ts": "DELTA_BINARY_PACKED"}


@dataclass(frozen=True)
class FileFacts:
    rows: int
    min_ts: int  # microseconds since the epoch
    max_ts: int


def partition(hour: int) -> str:
    """``date=YYYY-MM-DD/hour=HH`` for an hour number (hours since the epoch)."""
    return datetime.fromtimestamp(hour * 3600, timezone.utc).strftime("date=%Y-%m-%d/hour=%H")


def by_hour(table: pa.Table) -> list[tuple[int, pa.Table]]:
    """Split a table by the UTC hour of ``ts``: one output file per hour touched."""
    hours = pc.divide(table["ts"].cast(pa.int64()), HOUR_US)
    bounds = pc.min_max(hours).as_py()
    if bounds["min"] == bounds["max"]:
        return [(bounds["min"], table)]
    return [(hour, table.filter(pc.equal(hours, hour))) for hour in sorted(pc.unique(hours).to_pylist())]


def open_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """A Parquet writer with the trail's settings: zstd, statistics and dictionaries where they
    pay, delta-encoded timestamps. Anything that writes audit files (the synthetic history too)
    uses it, so that what analytics reads looks the same whoever wrote it."""
    return pq.ParquetWriter(path, schema, compression="zstd", write_statistics=STATISTICS,
                            use_dictionary=[name for name in schema.names if name not in NOT_DICTIONARY],
                            column_encoding={name: kind for name, kind in ENCODING.items() if name in schema.names})


def write_parquet(tables: Iterable[pa.Table], schema: pa.Schema, path: Path) -> FileFacts:
    """Write tables as one zstd Parquet file in row groups of up to ROW_GROUP_ROWS, then fsync.

    Small tables are buffered and written together, so the row groups stay large however the
    input is chunked.
    """
    rows, buffered, low, high = 0, 0, None, None
    pending: list[pa.Table] = []
    with open_writer(path, schema) as writer:
        for table in tables:
            if not table.num_rows:
                continue
            bounds = pc.min_max(table["ts"].cast(pa.int64())).as_py()
            low = bounds["min"] if low is None else min(low, bounds["min"])
            high = bounds["max"] if high is None else max(high, bounds["max"])
            pending.append(table)
            rows += table.num_rows
            buffered += table.num_rows
            if buffered >= ROW_GROUP_ROWS:
                writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
                pending, buffered = [], 0
        if pending:
            writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return FileFacts(rows, low or 0, high or 0)


def install(tmp: Path, final: Path) -> None:
    """Atomically publish a fsync'd temp file under its final name."""
    os.replace(tmp, final)
    fsync_dir(final.parent)


def convert_segment(segment: Path, audit_dir: Path, instance: str, manifest: Manifest, *,
                    replay: bool = False) -> list[str]:
    """Convert one closed segment, list its files in the manifest, delete it; return the paths.

    ``replay``: the segment may have been converted before (left by an earlier run, or a
    retry), so a file the manifest ever listed is skipped even if compaction has since merged
    it away. A fresh segment only needs that (costly) manifest scan if its file exists.
    """
    table = read_segment(segment)
    written = []
    for hour, part in by_hour(table) if table is not None else ():
        path = f"{partition(hour)}/{instance}-{segment.stem}.parquet"
        final = audit_dir / path
        tmp = final.with_name(final.name + TMP_SUFFIX)
        if (replay or final.exists()) and manifest.lists(path):
            tmp.unlink(missing_ok=True)  # left by a conversion cut short (a crash)
            continue  # converted and listed before a crash that left the segment behind
        make_dirs(final.parent)
        try:
            facts = write_parquet([part], part.schema, tmp)
            digest = sha256_file(tmp)
            install(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk, say: the segment is converted again later
            raise
        manifest.append(path=path, sha256=digest, rows=facts.rows, min_ts=facts.min_ts, max_ts=facts.max_ts)
        written.append(path)
    delete_segment(segment)
    return written
