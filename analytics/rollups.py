"""Rollups: per-hour summaries of the audit trail's closed hours, so that the Overview's reports
read a few thousand rows a day instead of every record (views.sql: ``rollups``, ``summary``).

One Parquet file per day, ``rollups/date=YYYY-MM-DD/hours.parquet``, for every day from the
first to the last closed hour with records: the hours' decision counts and latency histograms
per gateway host (so that a host filter applies to them),
a ``covered`` row saying up to which hour the day is summarised, and an ``unsummarised`` row for
each hour left to the raw trail because one of its audit files could not be read (readers then
apply their own policy for damaged files, as for any raw hour). The file's metadata records, per
hour, a digest of the names of the audit files it summarised; ``build`` summarises the hours
closed since the last build, summarises again an hour whose files changed (compaction, a segment
replayed after a crash) and drops an hour whose files are gone. Until then a report reads the
hour's old summary.

Each day file is written atomically (temp file, fsync, rename). Readers trust the chain of day
files from the first up to the first day missing or not covered to its end, so a build cut
short, or a day file deleted, makes them read more of the raw trail, never less.

Beside each whole day's hours, ``licenses.parquet`` summarises the day per license, metered
feature and key source for the license reports (``analytics.license_rollups``).

Rollups are derived data: deleting ``rollups/`` loses nothing, the next build writes them again.
"""
from __future__ import annotations

import fcntl
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

from analytics import license_rollups
from analytics.db import ROLLUP_SCHEMA, ROLLUPS_DIR, audit_dir_of, connect, query, skipped_files
from analytics.rollup_files import day_dir, digest, write_atomic
from gateway.audit.parquet import make_dirs

DAY_FILE = "hours.parquet"
VERSION = 3  # of the day files' shape: a day file of another version is summarised again
_META_KEY = b"portcullis.rollup"
_LOCK = "_build.lock"
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

Progress = Callable[[int, int, str], None]


@dataclass
class Build:
    """What one ``build`` did."""

    hours_built: int = 0
    hours_dropped: int = 0
    days_written: list[str] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)  # unreadable: their hours left to the raw trail
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.days_written)


@dataclass(frozen=True)
class _Day:
    """A day file as written: its rows, the digests of its hours, how far it covers."""

    table: pa.Table
    digests: dict[datetime, str]
    covered_until: datetime


def build(data_dir: str | Path, *, now: datetime, grace: timedelta, wait: bool = True,
          progress: Progress | None = None) -> Build | None:
    """Bring the rollups of ``data_dir`` up to date with its closed hours (those that ended at
    least ``grace`` before ``now``; ``Settings.hour_closed_after``). One build at a time per data
    directory: with ``wait`` false, returns None at once if another is running."""
    root = Path(data_dir).resolve()
    began = time.perf_counter()
    make_dirs(root / ROLLUPS_DIR)
    with open(root / ROLLUPS_DIR / _LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            return None
        result = _build(root, _hour_floor(now - grace), progress or (lambda done, total, day: None))
    result.seconds = round(time.perf_counter() - began, 3)
    return result


def signature(data_dir: str | Path) -> tuple:
    """What the rollups of ``data_dir`` look like on disk (day files, their sizes and times): a
    connection opened under another signature reads an out-of-date coverage."""
    seen = []
    for path in (Path(data_dir) / ROLLUPS_DIR).glob("date=*/*.parquet"):
        try:
            stat = path.stat()
        except OSError:  # replaced or removed just now: the next look sees what came instead
            continue
        seen.append((path.parent.name, path.name, stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(seen))


def _hour_floor(t: datetime) -> datetime:
    return t.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


def _build(root: Path, horizon: datetime, progress: Progress) -> Build:
    """Summarise every hour before ``horizon`` (the closed ones)."""
    files = _closed_hours(audit_dir_of(root), horizon)  # listed before reading: see _summarise
    existing = _day_files(root)
    result = Build()
    days = _days(min(files).date(), max(files).date()) if files else []  # later hours have no records
    for stray in sorted(set(existing) - set(days)):  # before the trail's first day: retention
        gone = _read_day(existing[stray])
        shutil.rmtree(existing[stray].parent)
        result.hours_dropped += len(gone.digests) if gone else 0
        result.days_written.append(stray.isoformat())
    plans = []
    for day in days:
        before = _read_day(existing.get(day))
        current = {hour: names for hour, names in files.items() if hour.date() == day}
        covered_until = min(horizon, _day_start(day) + DAY)
        stale = sorted(hour for hour, names in current.items()
                       if before is None or before.digests.get(hour) != digest(names))
        gone = [] if before is None else sorted(set(before.digests) - set(current))
        if before is None or stale or gone or before.covered_until != covered_until:
            plans.append((day, before, current, stale, gone, covered_until))
    for done, (day, before, current, stale, gone, covered_until) in enumerate(plans):
        progress(done, len(plans), day.isoformat())
        kept = None if before is None else _without_hours(before.table, set(stale) | set(gone))
        new, unreadable, changed = _summarise(root, {hour: current[hour] for hour in stale})
        # An hour whose files changed meanwhile is left to the raw trail and, with no digest
        # recorded, summarised again next time.
        _write_day(root, day, [kept, new, _marks(covered_until, unreadable, changed)],
                   {hour: digest(names) for hour, names in current.items() if hour not in changed}, covered_until)
        result.hours_built += len(stale)
        result.hours_dropped += len(gone)
        result.days_written.append(day.isoformat())
        result.skipped_files += unreadable
    for day in days:  # then each whole day's license rollup (analytics.license_rollups)
        current = {hour: names for hour, names in files.items() if hour.date() == day}
        if license_rollups.update(root, day, sorted(p for names in current.values() for p in names),
                                  _whole(_read_day(_day_path(root, day)), day, current)) \
                and day.isoformat() not in result.days_written:
            result.days_written.append(day.isoformat())
    progress(len(plans), len(plans), "")
    return result


def _whole(state: _Day | None, day: date, hours: dict[datetime, list[str]]) -> bool:
    """Whether ``day`` is closed and each of its hours summarised from readable files."""
    return (state is not None and state.covered_until == _day_start(day) + DAY and set(state.digests) == set(hours)
            and not pc.any(pc.equal(state.table["kind"], "unsummarised")).as_py())


def _closed_hours(audit_dir: Path, horizon: datetime) -> dict[datetime, list[str]]:
    """Each hour before ``horizon`` that has audit files, with their absolute paths."""
    hours: dict[datetime, list[str]] = {}
    for path in audit_dir.glob("date=*/hour=*/*.parquet"):
        try:
            hour = datetime.strptime(f"{path.parent.parent.name}/{path.parent.name}",
                                     "date=%Y-%m-%d/hour=%H").replace(tzinfo=timezone.utc)
        except ValueError:
            continue  # not a partition the audit view reads as one
        if hour < horizon:
            hours.setdefault(hour, []).append(str(path))
    return {hour: sorted(paths) for hour, paths in hours.items()}


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def _day_path(root: Path, day: date) -> Path:
    return day_dir(root, day) / DAY_FILE


def _day_files(root: Path) -> dict[date, Path]:
    files = {}
    for path in (root / ROLLUPS_DIR).glob(f"date=*/{DAY_FILE}"):
        try:
            files[date.fromisoformat(path.parent.name.removeprefix("date="))] = path
        except ValueError:
            continue
    return files


def _read_day(path: Path | None) -> _Day | None:
    """A day file read in full, so that damage anywhere in it is found; None if it is missing,
    damaged or of another version (the day is then summarised again, whole)."""
    if path is None:
        return None
    try:
        table = pq.read_table(path, schema=ROLLUP_SCHEMA, page_checksum_verification=True)
        meta = json.loads((pq.read_schema(path).metadata or {})[_META_KEY])
        if meta["version"] != VERSION:
            return None
        return _Day(table, {datetime.fromisoformat(h): d for h, d in meta["hours"].items()},
                    datetime.fromisoformat(meta["covered_until"]))
    except (OSError, KeyError, ValueError, TypeError, pa.ArrowException):
        return None


def _without_hours(table: pa.Table, hours: set[datetime]) -> pa.Table:
    """``table`` without the rows of ``hours`` and without its ``covered`` row (written anew)."""
    keep = pc.invert(pc.or_(pc.is_in(table["hour"], pa.array(sorted(hours), ROLLUP_SCHEMA.field("hour").type)),
                            pc.equal(table["kind"], "covered")))
    return table.filter(keep)


def _summarise(root: Path, hours: dict[datetime, list[str]]) -> tuple[pa.Table, list[str], set[datetime]]:
    """The summary rows of ``hours`` (one day's) from exactly the files listed for them; the
    listed files that could not be read; and the hours whose files changed while this ran (one
    vanished: compaction replaced it). Neither kind of hour gets rows (see ``_marks``)."""
    if not hours:
        return ROLLUP_SCHEMA.empty_table(), [], set()
    listed = [path for paths in hours.values() for path in paths]
    con = connect(root, skip_corrupt=True, files=listed, rollups=False)
    try:
        table = query(con, """
            SELECT kind, hour, decision, reason, http_status, latency_us, calls, host
            FROM summary($since, $until, $since)
            WHERE list_contains($hours, hour)
            ORDER BY hour, kind, host, latency_us, decision, reason, http_status
        """, {"since": min(hours), "until": max(hours) + HOUR, "hours": sorted(hours)})
        left_out = set(skipped_files(con)) & set(listed)
    finally:
        con.close()
    vanished = {path for path in listed if not os.path.exists(path)}
    changed = {hour for hour, paths in hours.items() if vanished & set(paths)}
    unreadable = sorted(left_out - vanished)
    damaged = {hour for hour, paths in hours.items() if set(paths) & set(unreadable)}
    return _without_hours(table.cast(ROLLUP_SCHEMA), damaged | changed), unreadable, changed


def _marks(covered_until: datetime, unreadable: list[str], changed: set[datetime]) -> pa.Table:
    """The day's ``covered`` row and an ``unsummarised`` row per hour left to the raw trail."""
    hours = sorted(changed | {datetime.strptime(f"{Path(p).parent.parent.name}/{Path(p).parent.name}",
                                                "date=%Y-%m-%d/hour=%H").replace(tzinfo=timezone.utc)
                              for p in unreadable})
    kinds = ["covered"] + ["unsummarised"] * len(hours)
    return pa.table({"kind": pa.array(kinds, pa.string()),
                     "hour": pa.array([covered_until, *hours], ROLLUP_SCHEMA.field("hour").type),
                     "calls": pa.array([0] * len(kinds), pa.int64())})


def _write_day(root: Path, day: date, parts: list[pa.Table | None], digests: dict[datetime, str],
               covered_until: datetime) -> None:
    """Write ``day``'s file atomically from ``parts``, with the digests of its hours."""
    path = _day_path(root, day)
    table = pa.concat_tables([t for t in parts if t is not None], promote_options="default")
    table = table.select(ROLLUP_SCHEMA.names).cast(ROLLUP_SCHEMA).sort_by([("hour", "ascending")])
    meta = {"version": VERSION, "covered_until": covered_until.isoformat(),
            "hours": {hour.isoformat(): hour_digest for hour, hour_digest in sorted(digests.items())}}
    write_atomic(path, table, _META_KEY, meta)
