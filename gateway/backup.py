"""Backups of a data directory taken while gateways serve it, and their verified restore.

A backup is a directory laid out like the data directory it came from, plus ``backup.json``:
what was copied (path, size, SHA-256 of each file), when, the ``policy_version`` and the audit
chain head at that moment. It holds secrets, so it is private throughout (directories 0700,
files 0600).

- ``portcullis.db`` is copied with SQLite's online backup API in one step: one read transaction,
  so the copy is one consistent moment of the registry, and in WAL mode the gateways' writes
  carry on meanwhile. (Copying in several steps would restart whenever a gateway writes between
  them, that is, never finish under load.) The copy is a self-contained file (journal mode
  DELETE) that passes ``PRAGMA integrity_check``.
  With ``registry_url`` set the registry lives in PostgreSQL and is not copied here (``pg_dump``
  backs it up: docs/operations.md, "Backups"); the backup records where it is, its license count
  and revision, so that a dump can be matched with the keys that go with it.
- ``keys/`` and the configuration files are read once each; the bytes hashed are the bytes written.
- The audit history is copied only on request (``with_audit``): it is large and append-only, so
  it is better copied incrementally (rsync) beside the backup. Either way the backup records the
  chain head. With the history, the backup takes the manifest's complete lines at one moment and
  the files they list; a file compaction replaced meanwhile sends it back to the manifest.

``backup.json`` is written last: a directory without it is not a backup.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg

from gateway.audit.manifest import Entry, Head, Manifest, apply, chains, line_hash, sha256_file
from gateway.audit.segment import fsync_dir
from gateway.config import Settings
from gateway.policy import policy_version
from gateway.registry import RegistryUnavailable
from gateway.registry.pgconn import connect, unavailable, where

MANIFEST = "backup.json"
FORMAT = 1
CONFIG_FILES = ("policy.toml", "callers.toml", "portcullis.toml")
SECRET_DIRS = ("keys", "tls")  # copied whole, kept private
_ATTEMPTS = 5  # re-reads of the audit manifest when compaction keeps replacing files under the copy
_BLOCK = 1 << 20

Progress = Callable[[str], None]


class BackupError(ValueError):
    """A backup cannot be taken, verified or restored; the message is one line, safe to show."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def copy_private(src: Path, dst: Path) -> tuple[str, int]:
    """Copy ``src`` to a new private file ``dst``; the SHA-256 and size of what was written."""
    private_dir(dst.parent)
    digest, size = hashlib.sha256(), 0
    with open(src, "rb") as f, open(os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        while block := f.read(_BLOCK):
            digest.update(block)
            out.write(block)
            size += len(block)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest(), size


def _listing(root: Path) -> Iterator[Path]:
    """Every file under ``root``, relative to it, in a stable order."""
    return (p.relative_to(root) for p in sorted(root.rglob("*")) if p.is_file())


# -- taking a backup -------------------------------------------------------------------------------

class _Writer:
    """The files written into one backup directory, with their checksums."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, dict[str, Any]] = {}

    def copy(self, src: Path, rel: str) -> str:
        digest, size = copy_private(src, self.root / rel)
        self.files[rel] = {"sha256": digest, "size": size}
        return digest

    def adopt(self, rel: str) -> None:
        """Record a file already written into the backup (the registry copy)."""
        path = self.root / rel
        self.files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}

    def drop(self, rel: str) -> None:
        (self.root / rel).unlink()
        del self.files[rel]


def _copy_registry(db_path: Path, dst: Path) -> dict[str, int]:
    os.close(os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # private before SQLite opens it
    source = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10.0)
    target = sqlite3.connect(dst, isolation_level=None)
    try:
        source.backup(target)  # pages=-1: the whole database in one step, one consistent moment
        target.execute("PRAGMA journal_mode=DELETE")
        check = target.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            raise BackupError(f"the registry copy fails its integrity check ({check}); the source may be damaged")
        licenses = target.execute("SELECT COUNT(*) FROM licenses").fetchone()[0]
        revision = target.execute("SELECT value FROM meta WHERE key='revision'").fetchone()[0]
    except sqlite3.Error as exc:
        raise BackupError(f"cannot copy the registry {db_path}: {exc}") from None
    finally:
        source.close()
        target.close()
    return {"licenses": licenses, "revision": revision}


def _shared_registry(url: str) -> dict[str, Any]:
    """Where the PostgreSQL registry is (never its password), its license count and revision now."""
    try:
        with connect(url) as conn, unavailable(url):
            licenses = conn.execute("SELECT count(*) FROM licenses").fetchone()[0]
            revision = conn.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()[0]
    except RegistryUnavailable as exc:
        raise BackupError(str(exc)) from None
    except psycopg.Error as exc:  # reachable, but not a registry (not migrated)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BackupError(f"cannot read the registry {where(url)}: {reason} (run `portcullis migrate`?)") from None
    return {"kind": "postgresql", "location": where(url), "copied": False, "backed_up_by": "pg_dump",
            "licenses": licenses, "revision": revision}


def _manifest_prefix(path: Path) -> tuple[bytes, dict[str, Entry], Head | None]:
    """A chain's complete lines at this moment, the files they list, and their head."""
    data = path.read_bytes() if path.exists() else b""
    data = data[:data.rfind(b"\n") + 1]
    live: dict[str, Entry] = {}
    head = None
    for line in data.splitlines():
        try:
            entry = Entry.parse(line)
        except ValueError as exc:
            raise BackupError(f"{path}: {exc}; run `portcullis audit verify`") from None
        apply(entry, live, {})
        head = Head(entry.seq, line_hash(line), entry.path)
    return data, live, head


def _own_head(audit_dir: Path, host: str) -> Head | None:
    """This host's chain head (an older trail's single chain until a gateway adopts it)."""
    own = Manifest(audit_dir, host=host)
    return _manifest_prefix((own if own.path.exists() else Manifest(audit_dir)).path)[2]


def _copy_audit(audit_dir: Path, host: str, out: _Writer, progress: Progress) -> Head | None:
    """Every host's chain and the files it lists (the whole shared history)."""
    for _ in range(_ATTEMPTS):
        prefixes = {chain.path: _manifest_prefix(chain.path) for chain in chains(audit_dir)}
        live = {path: entry for _, listed, _ in prefixes.values() for path, entry in listed.items()}
        todo = [(path, entry) for path, entry in sorted(live.items()) if f"audit/{path}" not in out.files]
        replaced, hour = False, None
        for number, (path, entry) in enumerate(todo, 1):
            if hour != (hour := path.rpartition("/")[0]):
                progress(f"audit: [{number}/{len(todo)} files] {hour}")
            try:
                digest = out.copy(audit_dir / path, f"audit/{path}")
            except FileNotFoundError:
                replaced = True  # merged by compaction since the manifest was read
                continue
            if digest != entry.sha256:
                raise BackupError(f"{audit_dir / path} differs from its manifest entry; run `portcullis audit verify`")
        if not replaced:
            break
    else:
        raise BackupError("audit files kept being replaced during the backup (compaction running?); try again")
    for rel in [rel for rel in out.files if rel.startswith("audit/") and rel[6:] not in live]:
        out.drop(rel)  # copied, then replaced by a compaction entry the final prefix includes
    for path, (data, _, _) in prefixes.items():
        if not data:
            continue
        rel = f"audit/{path.relative_to(audit_dir).as_posix()}"
        manifest = out.root / rel
        private_dir(manifest.parent)
        fd = os.open(manifest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "wb") as f:
            f.write(data)
        out.adopt(rel)
    return _own_head(out.root / "audit", host)


def _write_json(path: Path, obj: dict) -> str:
    """Write ``obj`` durably and atomically; returns the SHA-256 of what was written."""
    data = (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()
    tmp = path.with_name(path.name + ".tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return hashlib.sha256(data).hexdigest()


def take(settings: Settings, target: Path, *, with_audit: bool = False, progress: Progress = lambda _: None) -> dict:
    """Back up the data directory of ``settings`` into ``target`` (new or empty); returns ``backup.json``
    and, as ``sha256``, its own SHA-256 (to keep elsewhere, for ``restore --expect-sha256``)."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BackupError(f"{target} is not an empty directory: each backup goes into a new one "
                          f"(e.g. named by date); nothing was written")
    needed = (settings.policy_path, settings.keys_dir) + (() if settings.registry_url else (settings.db_path,))
    missing = [p.name for p in needed if not p.exists()]
    if missing:
        raise BackupError(f"no {' or '.join(missing)} in {settings.data_dir}: is this a data directory? (pass --data)")
    created = not target.exists()
    private_dir(target)
    try:
        manifest = _copy_all(settings, _Writer(target), with_audit, progress)
        manifest["sha256"] = _write_json(target / MANIFEST, manifest)
    except BaseException:
        clear(target)  # it was empty: whatever is in it now is this unfinished backup
        if created:
            target.rmdir()
        raise
    return manifest


def _copy_all(settings: Settings, out: _Writer, with_audit: bool, progress: Progress) -> dict:
    started = _now()
    if settings.registry_url:
        registry = _shared_registry(settings.registry_url)
        progress(f"registry: not copied, it lives in PostgreSQL ({registry['location']}, {registry['licenses']} "
                 f"licenses): back it up with pg_dump")
    else:
        progress("registry: copying portcullis.db (online backup, one step)")
        registry = {"kind": "sqlite", **_copy_registry(settings.db_path, out.root / settings.db_path.name)}
        out.adopt(settings.db_path.name)
        progress(f"registry: {out.files[settings.db_path.name]['size']:,} bytes, {registry['licenses']} licenses")
    # callers.toml before keys/: callers are saved secrets first, so every key id in the
    # callers.toml read has its secret in the hmac_secrets.json read after it.
    for name in CONFIG_FILES:
        if (settings.data_dir / name).is_file():
            out.copy(settings.data_dir / name, name)
    for folder in SECRET_DIRS:  # keys/, and tls/ where `init --server-cert` made the listener's
        for rel in _listing(settings.data_dir / folder):
            if not rel.name.endswith(".tmp"):  # a key being written: the renamed one is what counts
                out.copy(settings.data_dir / folder / rel, f"{folder}/{rel.as_posix()}")
    progress(f"keys: {sum(rel.startswith(tuple(f'{d}/' for d in SECRET_DIRS)) for rel in out.files)} files")
    head = (_copy_audit(settings.audit_dir, settings.host_name, out, progress) if with_audit
            else _own_head(settings.audit_dir, settings.host_name))
    return {
        "format": FORMAT, "started_at": started, "finished_at": _now(), "source": str(settings.data_dir),
        "policy_version": policy_version((out.root / "policy.toml").read_bytes()),
        "audit_head": asdict(head) if head else None, "with_audit": with_audit,
        "registry": registry, "files": out.files,
    }


def clear(directory: Path) -> None:
    """Remove everything inside ``directory``, keeping the directory itself."""
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
