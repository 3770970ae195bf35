"""Rollups: per-hour summaries of the audit trail's closed hours, so that the Overview's reports
read a few thousand rows a day instead of every record (views.sql: ``rollups``, ``summary``).

One Parquet file per day, ``rollups/date=YYYY-MM-DD/hours.parquet``, summarises the day's closed
hours: decision counts by decision, reason and HTTP status, and a latency histogram. Its metadata
records, per hour, a digest of the names of the audit files summarised. ``build`` summarises
hours that closed since the last build, summarises again an hour whose files changed
(compaction, a segment replayed after a crash) and drops an hour whose files are gone.

Readers trust every hour before the newest one summarised (``rollups_until`` in views.sql), so
days are written oldest first, each atomically (temp file, fsync, rename): a build cut short
leaves the rollups complete up to where it stopped, never with a gap. Until a changed hour is
built again, reports read its old summary: ``portcullis dashboard`` builds every minute.

Rollups are derived data: deleting ``rollups/`` loses nothing, the next build writes them again.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analytics.db import ROLLUP_SCHEMA, connect, drop_rollups, query, skipped_files
from gateway.audit.parquet import TMP_SUFFIX, install, make_dirs

ROLLUPS = "rollups"
DAY_FILE = "hours.parquet"
VERSION = 1  # of the summaries' shape: a day file of another version is summarised again
_META_KEY = b"portcullis.rollup"
_LOCK = "_build.lock"
HOUR = timedelta(hours=1)

Progress = Callable[[int, int, str], None]


@dataclass
class Build:
    """What one ``build`` did."""

    hours_built: int = 0
    hours_dropped: int = 0
    days_written: list[str] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)  # unreadable audit files left out
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.days_written)


def build(data_dir: str | Path, *, now: datetime, grace: timedelta, wait: bool = True,
          progress: Progress | None = None) -> Build | None:
    """Bring the rollups of ``data_dir`` up to date with its closed hours (those that ended at
    least ``grace`` before ``now``; ``Settings.hour_closed_after``). One build at a time per data directory: with ``wait`` false,
    returns None at once if another is running."""
    root = Path(data_dir)
    began = time.perf_counter()
    make_dirs(root / ROLLUPS)
    with open(root / ROLLUPS / _LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            return None
        result = _build(root, now - grace, progress or (lambda done, total, day: None))
    result.seconds = round(time.perf_counter() - began, 3)
    return result


def _build(root: Path, closed_before: datetime, progress: Progress) -> Build:
    listed = _closed_hours(root / "audit", closed_before)  # listed before reading: see _summarise
    recorded = {day: _recorded(path) for day, path in _day_files(root).items()}
    plans, before_by_day = [], {}
    for day in sorted(set(recorded) | {hour.date() for hour in listed}):
        before = recorded.get(day, {})
        current = {hour: digest for hour, digest in listed.items() if hour.date() == day}
        stale = sorted(hour for hour, digest in current.items() if before.get(hour) != digest)
        gone = sorted(set(before) - set(current))
        if stale or gone:
            plans.append((day, current, stale, gone))
            before_by_day[day] = before
    result = Build()
    if not plans:
        return result
    con = connect(root, skip_corrupt=True)
    try:
        drop_rollups(con)  # summarise from the raw trail only
        for done, (day, current, stale, gone) in enumerate(plans):
            progress(done, len(plans), day.isoformat())
            # A day file whose digests could not be read is trusted for nothing: written anew.
            kept = _kept(root, day, stale + gone) if before_by_day[day] else None
            _write_day(root, day, current, kept, _summarise(con, stale))
            result.hours_built += len(stale)
            result.hours_dropped += len(gone)
            result.days_written.append(day.isoformat())
        result.skipped_files = skipped_files(con)
    finally:
        con.close()
    progress(len(plans), len(plans), "")
    return result


def _closed_hours(audit_dir: Path, closed_before: datetime) -> dict[datetime, str]:
    """Each closed hour that has audit files, with the digest of their names."""
    names: dict[datetime, list[str]] = {}
    for path in audit_dir.glob("date=*/hour=*/*.parquet"):
        try:
            hour = datetime.strptime(f"{path.parent.parent.name}/{path.parent.name}",
                                     "date=%Y-%m-%d/hour=%H").replace(tzinfo=timezone.utc)
        except ValueError:
            continue  # not a partition the audit view reads as one
        if hour + HOUR <= closed_before:
            names.setdefault(hour, []).append(path.name)
    return {hour: _digest(files) for hour, files in names.items()}


def _digest(names: list[str]) -> str:
    # Audit files are never rewritten in place (new data gets a new name), so their names say
    # whether an hour's summary still holds.
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:32]


def _day_files(root: Path) -> dict[date, Path]:
    files = {}
    for path in (root / ROLLUPS).glob(f"date=*/{DAY_FILE}"):
        try:
            files[date.fromisoformat(path.parent.name.removeprefix("date="))] = path
        except ValueError:
            continue
    return files


def _recorded(path: Path) -> dict[datetime, str]:
    """The hours a day file summarises, with their digests; none if it cannot be read or is of
    another version (it is then summarised again, whole)."""
    try:
        meta = json.loads((pq.read_schema(path).metadata or {})[_META_KEY])
        if meta["version"] != VERSION:
            return {}
        return {datetime.fromisoformat(hour): digest for hour, digest in meta["hours"].items()}
    except (OSError, KeyError, ValueError, TypeError, pa.ArrowException):
        return {}


def _day_path(root: Path, day: date) -> Path:
    return root / ROLLUPS / f"date={day.isoformat()}" / DAY_FILE


def _kept(root: Path, day: date, replaced: list[datetime]) -> pa.Table | None:
    """The rows of ``day``'s file for the hours that stay as they are."""
    try:
        table = pq.read_table(_day_path(root, day), schema=ROLLUP_SCHEMA)
    except (OSError, pa.ArrowException):
        return None
    if not replaced:
        return table
    return table.filter(pc.invert(pc.is_in(table["hour"], pa.array(replaced, ROLLUP_SCHEMA.field("hour").type))))


def _summarise(con, hours: list[datetime]) -> pa.Table:
    """The summary rows of ``hours`` (one day's), from the raw trail. Files that arrive while
    this runs may or may not be read, but they were not listed, so their hour's digest will
    differ next time and the hour is summarised again."""
    if not hours:
        return ROLLUP_SCHEMA.empty_table()
    table = query(con, """
        SELECT hour, decision, reason, http_status, latency_us, calls
        FROM summary($since, $until, $since)
        WHERE list_contains($hours, hour)
        ORDER BY hour, latency_us NULLS FIRST, decision, reason, http_status
    """, {"since": hours[0], "until": hours[-1] + HOUR, "hours": hours})
    return table.cast(ROLLUP_SCHEMA)


def _write_day(root: Path, day: date, current: dict[datetime, str], kept: pa.Table | None, new: pa.Table) -> None:
    """Write ``day``'s file atomically: the kept rows and the new ones, and the digests of every
    hour now summarised; remove it when the day has no closed hour with files left."""
    path = _day_path(root, day)
    if not current:
        shutil.rmtree(path.parent, ignore_errors=True)
        return
    parts = [t for t in (kept, new) if t is not None]
    table = pa.concat_tables(parts).sort_by([("hour", "ascending")])
    meta = {"version": VERSION, "hours": {hour.isoformat(): digest for hour, digest in sorted(current.items())}}
    table = table.replace_schema_metadata({_META_KEY: json.dumps(meta).encode()})
    make_dirs(path.parent)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    install(tmp, path)
