"""Compaction: merge a closed hour's Parquet files into one (``portcullis audit compact``).

The merged file is written to a temp name and fsync'd, then listed in the manifest with the
files it replaces, then renamed into place, then the replaced files are deleted. Readers see
the old files, or briefly old and new, never neither. A run cut short is finished by the next:
it installs a listed merged file still under its temp name and deletes replaced files still
present (``verify`` names those as ``superseded`` meanwhile).

Inputs are checked against their manifest hashes first, so compaction never launders a
modified file into a freshly signed one.
"""
from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.manifest import Entry, Manifest, apply, sha256_file
from gateway.audit.parquet import TMP_SUFFIX, install, write_parquet
from gateway.audit.segment import fsync_dir

PREFIX = "compact-"
_LOCK = "_compact.lock"


@dataclass(frozen=True)
class Merge:
    partition: str  # date=YYYY-MM-DD/hour=HH
    files: int
    rows: int
    path: str = ""  # the merged file; empty when the hour was skipped
    skipped: str = ""  # why the hour was left as it is


def hour_end(partition: str) -> datetime:
    start = datetime.strptime(partition, "date=%Y-%m-%d/hour=%H").replace(tzinfo=timezone.utc)
    return start + timedelta(hours=1)


def _live(manifest: Manifest) -> tuple[dict[str, Entry], set[str], list[Entry]]:
    live: dict[str, Entry] = {}
    replaced: set[str] = set()
    merges = []
    for entry in manifest.entries():
        apply(entry, live, replaced)
        if entry.replaces:
            merges.append(entry)
    return live, replaced, merges


def _finish_interrupted(audit_dir: Path, live: dict[str, Entry], replaced: set[str], merges: list[Entry]) -> None:
    for entry in merges:
        final = audit_dir / entry.path
        tmp = final.with_name(final.name + TMP_SUFFIX)
        if entry.path in live and not final.exists() and tmp.exists() and sha256_file(tmp) == entry.sha256:
            install(tmp, final)
    for path in replaced:
        file = audit_dir / path
        if file.exists():
            file.unlink()
            fsync_dir(file.parent)
    for tmp in audit_dir.glob(f"date=*/hour=*/{PREFIX}*.parquet{TMP_SUFFIX}"):
        tmp.unlink()  # never listed: a run that stopped before its manifest entry


def _merge(audit_dir: Path, manifest: Manifest, partition: str, inputs: list[Entry]) -> Merge:
    rows = sum(entry.rows for entry in inputs)
    for entry in inputs:
        if sha256_file(audit_dir / entry.path) != entry.sha256:
            return Merge(partition, len(inputs), rows, skipped=f"{entry.path} does not match the manifest; "
                         "run `portcullis audit verify`")
    schema, *others = [pq.read_schema(audit_dir / entry.path) for entry in inputs]
    if any(other != schema for other in others):
        return Merge(partition, len(inputs), rows, skipped="its files have different schemas")
    paths = [entry.path for entry in inputs]
    name = PREFIX + hashlib.sha256("\n".join(paths).encode()).hexdigest()[:16] + ".parquet"
    final = audit_dir / partition / name
    tmp = final.with_name(name + TMP_SUFFIX)
    facts = write_parquet((pq.ParquetFile(audit_dir / p).read() for p in paths), schema, tmp)
    if facts.rows != rows:
        tmp.unlink()
        raise RuntimeError(f"{partition}: merged {facts.rows} rows, the manifest lists {rows}")
    manifest.append(path=f"{partition}/{name}", sha256=sha256_file(tmp), rows=facts.rows,
                    min_ts=facts.min_ts, max_ts=facts.max_ts, replaces=paths)
    install(tmp, final)
    for path in paths:
        (audit_dir / path).unlink()
    fsync_dir(final.parent)
    return Merge(partition, len(inputs), rows, path=f"{partition}/{name}")


def compact(audit_dir: Path, key: Ed25519PrivateKey, *, now: datetime, grace: timedelta,
            progress: Callable[[int, int, str], None] = lambda done, total, partition: None) -> list[Merge]:
    """Merge every hour that ended more than ``grace`` before ``now`` and has several files.

    ``grace`` must cover the writers' rotation interval, so that an hour is normally complete
    when merged; a late file (a segment replayed after a crash) just makes the hour mergeable
    again. One run at a time per audit directory (a lock file).
    """
    manifest = Manifest(audit_dir, key)
    with open(audit_dir / _LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        live, replaced, merges = _live(manifest)
        _finish_interrupted(audit_dir, live, replaced, merges)
        hours: dict[str, list[Entry]] = {}
        for path, entry in sorted(live.items()):
            hours.setdefault(path.rsplit("/", 1)[0], []).append(entry)
        due = [(p, inputs) for p, inputs in sorted(hours.items()) if len(inputs) > 1 and hour_end(p) + grace <= now]
        results = []
        for done, (partition, inputs) in enumerate(due):
            progress(done, len(due), partition)
            results.append(_merge(audit_dir, manifest, partition, inputs))
        progress(len(due), len(due), "")
        return results
