"""Compaction: merge a closed hour's Parquet files into one (``portcullis audit compact``).

The merged file is written to a temp name and fsync'd, then listed in the manifest with the
files it replaces, then renamed into place, then the replaced files are deleted. Readers see
the old files, or briefly old and new, never neither. A run cut short is finished by the next:
it installs a listed merged file still under its temp name and deletes replaced files still
present (``verify`` names those as ``superseded`` meanwhile).

Inputs are checked against their manifest hashes first, so compaction never launders a
modified file into a freshly signed one. A host merges only the files of its own chain, into a
file named after it: hosts sharing an audit directory never touch each other's files.
"""
from __future__ import annotations

import hashlib
import re
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


def history(manifest: Manifest) -> tuple[dict[str, Entry], dict[str, Entry], list[Entry]]:
    """The chain's files now (``live``), those compaction or pruning took out (``gone``), and its
    compaction entries."""
    live: dict[str, Entry] = {}
    gone: dict[str, Entry] = {}
    merges = []
    for entry in manifest.entries():
        apply(entry, live, gone)
        if entry.replaces:
            merges.append(entry)
    return live, gone, merges


def finish_interrupted(manifest: Manifest, live: dict[str, Entry], gone: dict[str, Entry],
                       merges: list[Entry]) -> None:
    """Complete what a compaction or pruning cut short (under the chain's lock)."""
    audit_dir = manifest.audit_dir
    for entry in merges:
        final = audit_dir / entry.path
        tmp = final.with_name(final.name + TMP_SUFFIX)
        if entry.path in live and not final.exists() and tmp.exists() and sha256_file(tmp) == entry.sha256:
            install(tmp, final)
    for path in gone:
        file = audit_dir / path
        if file.exists():
            file.unlink()
            fsync_dir(file.parent)
    own = re.compile(re.escape(_merged_prefix(manifest.host)) + r"[0-9a-f]{16}\.parquet" + re.escape(TMP_SUFFIX))
    for tmp in audit_dir.glob(f"date=*/hour=*/{PREFIX}*.parquet{TMP_SUFFIX}"):
        if own.fullmatch(tmp.name):
            tmp.unlink()  # never listed: a run that stopped before its manifest entry


def _merged_prefix(host: str) -> str:
    return f"{PREFIX}{host}-" if host else PREFIX


def _merge(manifest: Manifest, partition: str, inputs: list[Entry]) -> Merge:
    audit_dir = manifest.audit_dir
    rows = sum(entry.rows for entry in inputs)
    for entry in inputs:
        if sha256_file(audit_dir / entry.path) != entry.sha256:
            return Merge(partition, len(inputs), rows, skipped=f"{entry.path} does not match the manifest; "
                         "run `portcullis audit verify`")
    schema, *others = [pq.read_schema(audit_dir / entry.path) for entry in inputs]
    if any(other != schema for other in others):
        return Merge(partition, len(inputs), rows, skipped="its files have different schemas")
    paths = [entry.path for entry in inputs]
    name = _merged_prefix(manifest.host) + hashlib.sha256("\n".join(paths).encode()).hexdigest()[:16] + ".parquet"
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


def compact(audit_dir: Path, key: Ed25519PrivateKey, *, now: datetime, grace: timedelta, host: str = "",
            progress: Callable[[int, int, str], None] = lambda done, total, partition: None) -> list[Merge]:
    """Merge every hour of ``host``'s chain (``""``: an older trail's single chain) that ended
    more than ``grace`` before ``now`` and has several files.

    ``grace`` must cover the writers' rotation interval, so that an hour is normally complete
    when merged; a late file (a segment replayed after a crash) just makes the hour mergeable
    again. One run at a time per chain (its lock).
    """
    manifest = Manifest(audit_dir, key, host)
    manifest.ensure()
    with manifest.locked():
        live, gone, merges = history(manifest)
        finish_interrupted(manifest, live, gone, merges)
        hours: dict[str, list[Entry]] = {}
        for path, entry in sorted(live.items()):
            hours.setdefault(path.rsplit("/", 1)[0], []).append(entry)
        due = [(p, inputs) for p, inputs in sorted(hours.items()) if len(inputs) > 1 and hour_end(p) + grace <= now]
        results = []
        for done, (partition, inputs) in enumerate(due):
            progress(done, len(due), partition)
            results.append(_merge(manifest, partition, inputs))
        progress(len(due), len(due), "")
        return results
