"""Retention: remove whole days of the trail once they are older than ``audit_retention_days``.

A day is pruned only when it ended at least ``retention_days`` days before now, so no file
younger than the window is ever removed. Pruning is recorded before any file goes: one signed
entry per day in the host's own chain, listing the files it removes (``pruned``), so ``audit
verify`` stays green and still reports any other missing file. Then the files are deleted, and
the day's rollups (``rollups/date=D/``, derived from those files) with them. A run cut short is
finished by the next (or by compaction), and ``verify`` names the files meanwhile as ``pruned``.

Each host prunes only the files its own chain lists: hosts sharing an audit directory keep
their own windows, and none removes another's files.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.compact import finish_interrupted, history
from gateway.audit.manifest import Entry, Manifest
from gateway.audit.segment import fsync_dir

ROLLUPS_DIR = "rollups"  # analytics.rollups' folder in the data directory: derived from the audit files


@dataclass(frozen=True)
class Pruned:
    day: str  # YYYY-MM-DD
    files: int
    rows: int


def cutoff(now: datetime, retention_days: int) -> date:
    """The first day kept: every day before it ended at least ``retention_days`` days before ``now``."""
    return (now.astimezone(timezone.utc) - timedelta(days=retention_days)).date()


def prune(audit_dir: Path, key: Ed25519PrivateKey, *, host: str, now: datetime, retention_days: int,
          rollups_dir: Path | None = None) -> list[Pruned]:
    """Prune ``host``'s days before :func:`cutoff`; ``rollups_dir`` loses those days' rollups too."""
    if retention_days < 1:
        raise ValueError("retention_days must be at least 1 (0 keeps everything: nothing to prune)")
    first_kept = cutoff(now, retention_days)
    manifest = Manifest(audit_dir, key, host)
    manifest.ensure()
    done = []
    with manifest.locked():
        live, gone, merges = history(manifest)
        finish_interrupted(manifest, live, gone, merges)
        days: dict[date, list[Entry]] = {}
        for path, entry in sorted(live.items()):
            day = date.fromisoformat(path.split("/", 1)[0].removeprefix("date="))
            if day < first_kept:
                days.setdefault(day, []).append(entry)
        for day, entries in sorted(days.items()):
            paths = [entry.path for entry in entries]
            rows = sum(entry.rows for entry in entries)
            start = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1_000_000)
            manifest.append(path=f"date={day.isoformat()}", sha256="", rows=rows, min_ts=start,
                            max_ts=start + 86_400_000_000 - 1, pruned=paths)
            for path in paths:
                (audit_dir / path).unlink(missing_ok=True)
            for folder in {(audit_dir / path).parent for path in paths}:
                fsync_dir(folder)
                _remove_if_empty(folder)
            _remove_if_empty(audit_dir / f"date={day.isoformat()}")
            if rollups_dir is not None:
                shutil.rmtree(rollups_dir / f"date={day.isoformat()}", ignore_errors=True)
            done.append(Pruned(day.isoformat(), len(paths), rows))
    return done


def _remove_if_empty(folder: Path) -> None:
    """Another host's files, or a file written meanwhile, keep the folder."""
    try:
        folder.rmdir()
    except OSError:
        return
    fsync_dir(folder.parent)
