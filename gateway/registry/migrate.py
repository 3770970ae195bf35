"""Versioned schema migrations of the PostgreSQL registry (``portcullis migrate``).

A migration is a file ``gateway/registry/migrations/NNNN_name.sql``: adding the file is all a
schema change takes. :func:`migrate` applies the pending ones in version order, in one
transaction under an advisory lock (two hosts starting at once neither apply one twice nor see
half a schema), and records each in ``schema_migrations``; run again, it applies nothing.

Several hosts upgrade one at a time, so for a while hosts running the previous version use the
migrated schema: migrations only add (tables, nullable or defaulted columns, indexes), never
drop, rename or retype (``tests/registry/test_postgres_migrate.py`` holds every file to that).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from gateway.registry.pgconn import connect, unavailable

# pg_advisory_xact_lock(int4, int4) keys: a key space of their own, apart from the one-bigint locks
# check-and-consume takes per license.
_LOCK = (0x504F5254, 1)  # "PORT", migrations
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LEDGER = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY, name text NOT NULL, sha256 text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations() -> list[Migration]:
    """Every migration this version of Portcullis knows, oldest first."""
    found = []
    for entry in resources.files("gateway.registry.migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a version: {versions}")
    return found


def latest_version() -> int:
    return migrations()[-1].version


def applied_versions(conn: psycopg.Connection) -> set[int]:
    """Versions recorded in ``schema_migrations`` (empty for a database never migrated)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]
    if not exists:
        return set()
    return {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}


def migrate(url: str) -> dict:
    """Apply the pending migrations; returns what was applied and the schema version now."""
    with unavailable(url), connect(url) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", _LOCK)
            conn.execute(_LEDGER)
            done = applied_versions(conn)
            applied = []
            for migration in migrations():
                if migration.version in done:
                    continue
                conn.execute(migration.sql)  # no parameters: every statement of the file, as written
                conn.execute("INSERT INTO schema_migrations (version, name, sha256) VALUES (%s, %s, %s)",
                             (migration.version, migration.name, migration.sha256))
                applied.append(f"{migration.version:04d}_{migration.name}")
            version = max(done | {int(name[:4]) for name in applied}, default=0)
    return {"applied": applied, "version": version, "latest": latest_version()}
