"""Write N days of synthetic audit history into a data directory, laid out as the gateway does.

Day by day (so memory stays bounded at ~rows/days records): generate the day's records, then
write one Parquet file per hour under ``audit/date=YYYY-MM-DD/hour=HH/`` through a
``.parquet.tmp`` name and a rename, with the gateway's Parquet settings, one row group per
file: the layout after ``portcullis audit compact``, which is what a month of history looks
like in production (the number of files, not of rows, is what costs DuckDB most at query
planning time).
The matching licenses and callers snapshots are written too. No manifest is written: synthetic
history is not signed by any gateway, so ``portcullis audit verify`` would rightly refuse it.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gateway.audit.parquet import open_writer
from gateway.snapshot import write_callers_snapshot, write_licenses_snapshot

from .population import DAY_US, caller_rows, license_rows, make_population
from .traffic import HOUR_US, arrivals, traffic

SHAPES = ("gateway", "skewed")
COMPACTED = "compact"  # as `audit compact` names merged files: one file holds the hour of every instance


def generate(data_dir: str | Path, *, days: int = 30, rows: int = 1_000_000, end: datetime | None = None,
             licenses: int = 500, seed: int = 7, shape: str = "gateway",
             progress: Callable[[str], None] | None = None) -> dict:
    """Generate the history ending at ``end`` (default: now; naive = UTC), rounded down to the hour.

    ``shape`` ``gateway``: as this gateway writes it (one compacted file per hour, ts order, one
    row group). ``skewed``: most licenses expiring within the month after ``end``, a few licenses
    carrying most of the traffic, and files as another engine writes them: each hour in two
    files of uneven size named ``part-NNNNN-<hex>.c000.zstd.parquet``, rows in no order, row
    groups of 8,192 rows.

    Refuses a data directory that already holds audit files: mixing synthetic and real (or two
    synthetic) histories would make every report meaningless.
    """
    data_dir = Path(data_dir)
    audit_dir = data_dir / "audit"
    if any(audit_dir.glob("date=*/hour=*/*.parquet")):
        raise FileExistsError(f"{audit_dir} already holds audit files; choose an empty data directory")
    if days < 1 or rows < days:
        raise ValueError("need at least one day and at least one row per day")
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    end = end or datetime.now(timezone.utc)
    end = end if end.tzinfo else end.replace(tzinfo=timezone.utc)
    end_us = int(end.timestamp() * 1_000_000) // HOUR_US * HOUR_US
    start_us = end_us - days * DAY_US
    rng = np.random.default_rng(seed)
    began = time.perf_counter()

    pop = make_population(rng, licenses, start_us, end_us, skewed=shape == "skewed")
    write_licenses_snapshot(data_dir, license_rows(pop))
    write_callers_snapshot(data_dir, caller_rows())

    per_day = np.full(days, rows // days)
    per_day[: rows % days] += 1
    day_tables = (traffic(rng, pop, *arrivals(rng, start_us + day * DAY_US, 24, int(per_day[day])),
                          policy_switch_us=start_us + days * DAY_US // 2) for day in range(days))
    written: list[int] = []
    pending: list[Future[int]] = []
    # Parquet encoding releases the GIL, so each day is written while the next one is generated;
    # at most two days of records are in memory at once.
    with ThreadPoolExecutor(max_workers=2) as pool:
        for day, table in enumerate(day_tables):
            done, pending = pending, [pool.submit(_write, audit_dir, *job)
                                      for hour in _hour_files(table) for job in _files(rng, shape, *hour)]
            written += [future.result() for future in done]
            if progress and day:
                progress(f"day {day}/{days}: {sum(written):,} rows in {len(written):,} files, "
                         f"{time.perf_counter() - began:.1f}s")
        written += [future.result() for future in pending]
    if progress:
        progress(f"day {days}/{days}: {sum(written):,} rows in {len(written):,} files, "
                 f"{time.perf_counter() - began:.1f}s")
    return {
        "data_dir": str(data_dir), "rows": sum(written), "files": len(written), "days": days, "licenses": licenses,
        "shape": shape,
        "start": _iso(start_us), "end": _iso(end_us), "seconds": round(time.perf_counter() - began, 2),
    }


def _hour_files(table: pa.Table):
    """(hour start, rows) for each hour of records sorted by ts."""
    hour = pc.divide(table["ts"].cast(pa.int64()), HOUR_US).to_numpy()
    starts = np.flatnonzero(np.diff(hour, prepend=-1))
    for lo, hi in zip(starts, np.append(starts[1:], len(hour)), strict=True):
        yield int(hour[lo]) * HOUR_US, table.slice(lo, hi - lo)


def _files(rng: np.random.Generator, shape: str, hour_us: int, rows: pa.Table):
    """(hour start, file name, rows, row group size) for each file of one hour in ``shape``."""
    if shape == "gateway":
        yield hour_us, f"{COMPACTED}-{hour_us // HOUR_US:08d}.parquet", rows, max(1, rows.num_rows)
        return
    shuffled = rows.take(rng.permutation(rows.num_rows))
    cut = int(rows.num_rows * rng.uniform(0.6, 0.9))
    for part, (lo, hi) in enumerate(((0, cut), (cut, rows.num_rows))):
        if hi > lo:
            yield hour_us, f"part-{part:05d}-{rng.bytes(8).hex()}.c000.zstd.parquet", shuffled.slice(lo, hi - lo), 8192


def _write(audit_dir: Path, hour_us: int, name: str, rows: pa.Table, row_group_size: int) -> int:
    when = datetime.fromtimestamp(hour_us / 1e6, tz=timezone.utc)
    folder = audit_dir / f"date={when:%Y-%m-%d}" / f"hour={when:%H}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    tmp = path.with_name(path.name + ".tmp")
    with open_writer(tmp, rows.schema) as writer:
        writer.write_table(rows, row_group_size=row_group_size)
    os.replace(tmp, path)
    return rows.num_rows


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).isoformat()
