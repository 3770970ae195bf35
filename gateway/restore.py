"""Restoring a backup made by :mod:`gateway.backup`: verified, staged, then renamed into place.

Every file is copied into a staging directory inside the target (so the renames stay on one
filesystem, even when the data directory is a mounted volume) and hashed as it is copied; one
file that differs from ``backup.json`` stops the restore before anything in the data directory
changed. Only then is each file or directory renamed into place (each rename atomic). A data
directory that is not empty is only replaced with ``overwrite``, and never while a gateway holds
its audit spool: what was there is moved to ``pre-restore-<time>/`` inside it, never deleted.

Restoring takes the registry back to the moment of the backup: seats, quota counters, statuses
and nonces are those of that moment (docs/operations.md, "Backups", says what that implies). A
backup of a data directory whose registry lives in PostgreSQL holds no registry: the restored
directory uses the PostgreSQL registry as it is (restored from ``pg_dump`` if need be), which
``registry_url`` must name, from the backup's ``portcullis.toml`` or the environment.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePosixPath

from gateway import admin
from gateway.audit.manifest import sha256_file
from gateway.audit.segment import fsync_dir
from gateway.backup import (
    CONFIG_FILES,
    FORMAT,
    MANIFEST,
    SECRET_DIRS,
    BackupError,
    Progress,
    clear,
    copy_private,
    private_dir,
)
from gateway.config import load_settings
from gateway.registry import RegistryUnavailable, open_store
from gateway.registry.pgconn import where

_DB = "portcullis.db"
_TOP = {_DB, *SECRET_DIRS, "audit", *CONFIG_FILES}  # what a backup may hold
# Replaced by every restore, whether the backup holds them or not: the registry's journal files
# would otherwise be replayed onto the restored database; the snapshots are rebuilt from it.
_ALWAYS_REPLACED = (_DB, f"{_DB}-wal", f"{_DB}-shm", "keys", "snapshots", *CONFIG_FILES)


def load(backup_dir: Path, expect: str | None = None) -> dict:
    """``backup.json`` of ``backup_dir``, its file list checked to name only what a backup holds.

    The checksums in it expose damage; ``expect``, its SHA-256 as ``backup`` printed it and kept
    elsewhere, also exposes a backup whose files were changed and ``backup.json`` rewritten to match.
    """
    path = backup_dir / MANIFEST
    if not path.is_file():
        raise BackupError(f"{backup_dir} is not a backup (no {MANIFEST}), or one that did not finish")
    data = path.read_bytes()
    if expect is not None and hashlib.sha256(data).hexdigest() != expect.lower():
        raise BackupError(f"{path} does not have the SHA-256 recorded when the backup was taken: "
                          f"the backup was changed, or is another one; nothing was restored")
    try:
        manifest = json.loads(data)
        files = manifest["files"]
        ok = manifest["format"] == FORMAT and all(
            _safe(rel) and isinstance(f["sha256"], str) and isinstance(f["size"], int) for rel, f in files.items())
    except (ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise BackupError(f"{path} is damaged or of another format: cannot restore from it")
    return manifest


def registry_kind(manifest: dict) -> str:
    """``sqlite`` (copied into the backup) or ``postgresql`` (not copied; backups before the
    shared registry existed say nothing and hold portcullis.db)."""
    return manifest.get("registry", {}).get("kind", "sqlite")


def _safe(rel: str) -> bool:
    """A relative path inside the data directory, under one of the names a backup holds."""
    path = PurePosixPath(rel)
    return not path.is_absolute() and ".." not in path.parts and bool(path.parts) and path.parts[0] in _TOP


def _extra_files(backup_dir: Path, manifest: dict) -> list[str]:
    listed = set(manifest["files"]) | {MANIFEST}
    return sorted(rel for rel in (p.relative_to(backup_dir).as_posix() for p in backup_dir.rglob("*") if p.is_file())
                  if rel not in listed)


def _precheck(backup_dir: Path, manifest: dict) -> None:
    """Cheap checks before anything is written: every file present at its size, nothing added."""
    problems = []
    for rel, meta in sorted(manifest["files"].items()):
        path = backup_dir / rel
        if not path.is_file():
            problems.append(f"{rel} is missing")
        elif path.stat().st_size != meta["size"]:
            problems.append(f"{rel} has {path.stat().st_size} bytes, backup.json says {meta['size']}")
    problems += [f"{rel} is not listed in backup.json" for rel in _extra_files(backup_dir, manifest)]
    _refuse(problems)


def _refuse(problems: list[str]) -> None:
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise BackupError(f"damaged backup: {problems[0]}{more}; nothing was restored")


def _copies(backup_dir: Path, manifest: dict, staging: Path, progress: Progress) -> Iterator[int]:
    """Copy and hash every file into ``staging``; yields each file's size."""
    files = sorted(manifest["files"].items())
    for number, (rel, meta) in enumerate(files, 1):
        digest, size = copy_private(backup_dir / rel, staging / rel)
        if digest != meta["sha256"]:
            _refuse([f"{rel}: SHA-256 {digest[:16]}... differs from backup.json ({meta['sha256'][:16]}...)"])
        if number % 200 == 0 or number == len(files):
            progress(f"verified and staged {number}/{len(files)} files")
        yield size


def _serving(data_dir: Path) -> bool:
    """Whether a gateway holds an audit spool of ``data_dir`` (each running one locks its own)."""
    for lock in data_dir.glob("spool/*/.lock"):
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
    return False


def verify(backup_dir: Path, expect: str | None = None) -> dict:
    """Check every file of a backup against ``backup.json`` without restoring; returns it."""
    manifest = load(backup_dir, expect)
    _precheck(backup_dir, manifest)
    _refuse([f"{rel}: SHA-256 differs from backup.json" for rel, meta in sorted(manifest["files"].items())
             if sha256_file(backup_dir / rel) != meta["sha256"]])
    return manifest


def _swap_in(staging: Path, data_dir: Path, aside: Path, names: list[str]) -> list[str]:
    """Move what the restore replaces to ``aside``, then each staged name into place; returns what moved."""
    moved = []
    for name in dict.fromkeys([*_ALWAYS_REPLACED, *names]):
        if (data_dir / name).exists():
            private_dir(aside)
            os.replace(data_dir / name, aside / name)
            moved.append(name)
    for name in names:
        os.replace(staging / name, data_dir / name)
    staging.rmdir()
    fsync_dir(data_dir)
    return moved


def restore(backup_dir: Path, data_dir: Path, *, overwrite: bool = False, expect: str | None = None,
            progress: Progress = lambda _: None) -> dict:
    """Restore ``backup_dir`` into ``data_dir``; returns what was restored."""
    manifest = load(backup_dir, expect)
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        if _serving(data_dir):
            raise BackupError(f"a gateway is running on {data_dir}: stop it before restoring into it")
        if not overwrite:
            raise BackupError(f"{data_dir} is not empty: pass --overwrite to replace its registry, keys and "
                              f"configuration (they are moved to {data_dir}/pre-restore-<time>/, not deleted)")
    _precheck(backup_dir, manifest)
    shared = registry_kind(manifest) == "postgresql"
    if shared and not load_settings(backup_dir).registry_url:  # its portcullis.toml, then the environment
        raise BackupError(f"this backup's registry lives in PostgreSQL ({manifest['registry']['location']}) and "
                          f"nothing names it: set PORTCULLIS_REGISTRY_URL; nothing was restored")
    created = not data_dir.exists()
    private_dir(data_dir)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    staging = data_dir / f".restore-{stamp}"
    staging.mkdir(mode=0o700)
    try:
        restored_bytes = sum(_copies(backup_dir, manifest, staging, progress))
    except BaseException:
        clear(staging)
        staging.rmdir()
        if created:
            data_dir.rmdir()
        raise
    aside = data_dir / f"pre-restore-{stamp}"
    moved = _swap_in(staging, data_dir, aside, sorted({PurePosixPath(rel).parts[0] for rel in manifest["files"]}))
    settings = load_settings(data_dir)
    try:
        store = open_store(settings)
        try:
            admin.publish_snapshots(settings, store)  # analytics reads the registry through these
        finally:
            store.close()
    except RegistryUnavailable as exc:  # the shared registry: everything else is in place already
        raise BackupError(f"restored into {data_dir}, but analytics' snapshots of the registry were not rebuilt: "
                          f"{exc}; run `portcullis init` on it once the registry is reachable") from None
    return {
        "data_dir": str(data_dir), "files": len(manifest["files"]), "bytes": restored_bytes,
        "backup_started_at": manifest["started_at"], "policy_version": manifest["policy_version"],
        "audit_head": manifest["audit_head"], "with_audit": manifest["with_audit"],
        "registry": {"kind": registry_kind(manifest), "restored": not shared,
                     **({"location": where(settings.registry_url)} if shared else {})},
        "moved_aside": str(aside) if moved else None, "moved": moved,
        "serve_after": (datetime.now(timezone.utc) + timedelta(seconds=settings.clock_skew_s)).isoformat(
            timespec="seconds"),
    }
