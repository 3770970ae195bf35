"""License rollups: one file per whole day, ``rollups/date=D/licenses.parquet``, holding that day's
rows of ``license_days``, ``feature_days``, ``quota_days``, ``key_sources`` and ``key_days``
(views.sql), so that the license reports (``expiring``, ``seats``, ``features``, ``quota``,
``stale-keys``, ``renewals``,
``seat-pressure``, ``quota-forecast``, ``key-anomalies``) read a few rows per license and day instead of every record of their windows.

Distinct users stay exact: a license's row keeps the day's distinct user ids (and features) as a
list, and a window's distinct count is the length of the union of its days' lists. That costs
space in proportion to each license's daily users, not to its calls.

``analytics.rollups`` keeps them: once a day is closed and each of its hours summarised from
readable files, the day's file is written from exactly those audit files, with a digest of their
names; it is written again when they change (compaction, a replayed segment) and removed when
the day no longer qualifies (a file of the day unreadable or vanished while read). A day without
a file is read raw by the views, so a missing file costs time, never answers.
"""
from __future__ import annotations

import os
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa

from analytics.db import LICENSE_ROLLUP_SCHEMA, connect, query, skipped_files
from analytics.rollup_files import day_dir, digest, read_meta, write_atomic

FILE = "licenses.parquet"
VERSION = 4  # of the files' shape: a file of another version is written again
_META_KEY = b"portcullis.license_rollup"

_DAY_ROWS = """
SELECT 'license' AS kind, host, license_id, key_fp, calls, allowed, alerted, first_seen, last_seen, users, features,
       seats_used, seats_limit, seats_at, seat_denials, seat_overages
FROM license_days($since, $until)
UNION ALL BY NAME
SELECT 'feature' AS kind, host, license_id, feature, tier, calls, allowed, alerted
FROM feature_days($since, $until)
UNION ALL BY NAME
SELECT 'quota' AS kind, host, license_id, feature, calls, first_seen, last_seen, quota_first, quota_used, quota_limit,
       quota_alerts, quota_denials, customer, tier
FROM quota_days($since, $until)
UNION ALL BY NAME
SELECT 'source' AS kind, host, license_id, key_fp, caller_id, network, calls, first_seen, last_seen
FROM key_sources($since, $until)
UNION ALL BY NAME
SELECT 'key' AS kind, host, key_fp, caller_id, last_used, zombie, presented, last_presented
FROM key_days($since, $until)
UNION ALL BY NAME
SELECT 'covered' AS kind
"""


def update(root: Path, day: date, paths: list[str], whole: bool) -> bool:
    """Bring ``day``'s file in line with ``paths``, every audit file of the day; ``whole`` says
    whether the day is closed and each of its hours summarised. True if it wrote or removed it."""
    path = day_dir(root, day) / FILE
    wanted = {"version": VERSION, "digest": digest(paths)}
    if whole and read_meta(path, _META_KEY) == wanted:
        return False
    table = _summarise(root, day, paths) if whole else None
    if table is None:
        existed = path.exists()
        path.unlink(missing_ok=True)
        return existed
    write_atomic(path, table, _META_KEY, wanted)
    return True


def _summarise(root: Path, day: date, paths: list[str]) -> pa.Table | None:
    """The day's rows from exactly ``paths``; None if one could not be read or vanished meanwhile."""
    if not paths:  # a day without records: nothing to read, and nothing to read raw either
        return pa.Table.from_pylist([{"kind": "covered"}], schema=LICENSE_ROLLUP_SCHEMA)
    since = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    con = connect(root, skip_corrupt=True, files=paths, rollups=False)
    try:
        table = query(con, _DAY_ROWS, {"since": since, "until": since + timedelta(days=1)})
        if skipped_files(con):
            return None
    finally:
        con.close()
    if not all(os.path.exists(p) for p in paths):
        return None
    return table.select(LICENSE_ROLLUP_SCHEMA.names).cast(LICENSE_ROLLUP_SCHEMA).sort_by(
        [("kind", "ascending"), ("license_id", "ascending")])
