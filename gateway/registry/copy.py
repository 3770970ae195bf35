"""Move a single-host SQLite registry into PostgreSQL (``portcullis registry copy``).

Stop the single host's gateway first: what it grants after the copy's snapshot would not come
along. Licenses keep their revisions, creation and change times and seal stamps; seats and usage
counters come along, so nothing is granted twice after the move; the nonces still in force in
the file (a gateway with several workers keeps them there; one worker keeps its own in
``nonces/``, which only a host reusing that data directory takes in); generations and claims, so
no notification is sent twice. Tallies of failed authentications (minutes long) are not copied.
The callers of the data directory the file is in come along too (``callers.toml``, and their
secrets from ``keys/hmac_secrets.json``, sealed under ``keys/registry_seal.key``: never in clear).

Licenses, seal stamps, seats, counters and callers go into an empty PostgreSQL registry only (a
second copy would double the counters); nonces, generations and claims merge with what hosts already
running there wrote. One transaction: a failed copy leaves nothing behind.
"""
from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.callers import CallerDirectory, CallerFiles, CallersError
from gateway.config import Settings
from gateway.registry.migrate import migrate
from gateway.registry.pgconn import LICENSES, connect, notify, unavailable
from gateway.registry.postgres_callers import insert_callers
from gateway.registry.seal import Seal, SealError


class CopyError(ValueError):
    """The copy cannot be made (the message says why and changes nothing)."""


@dataclass(frozen=True)
class Table:
    name: str
    columns: str
    where: str = ""  # which rows of the SQLite table (``:now``: seconds since the epoch)
    merge: str | None = None  # the ON CONFLICT clause; None: the target table must be empty


# In dependency order. A new shared table is one more entry here, with its migration (callers come
# from the data directory's files, not from the SQLite file: insert_callers).
TABLES = (
    Table("licenses", "license_id, key_hash, doc, rev, created_us, updated_us"),
    Table("dated", "license_id, dated_us"),
    Table("seats", "license_id, user_id, last_seen_us"),
    Table("usage", "license_id, quota_key, period_start_us, used"),
    Table("nonces", "nonce, expires", "expires > :now",
          "ON CONFLICT (nonce) DO UPDATE SET expires = greatest(nonces.expires, excluded.expires)"),
    Table("generations", "name, value", "",
          "ON CONFLICT (name) DO UPDATE SET value = greatest(generations.value, excluded.value)"),
    Table("claims", "key, at_us", "", "ON CONFLICT (key) DO NOTHING"),
)


def _source_rows(source: sqlite3.Connection, table: Table, now: float) -> list[tuple]:
    present = source.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table.name,)).fetchone()
    if not present:  # a registry that never needed it (e.g. nonces of a single worker)
        return []
    where = f" WHERE {table.where}" if table.where else ""
    return source.execute(f"SELECT {table.columns} FROM {table.name}{where}", {"now": now}).fetchall()


def _callers(data: Settings) -> tuple[CallerDirectory, Seal | None]:
    """The data directory's callers, and the key to seal their secrets with (none is needed
    when there is nothing to seal)."""
    try:
        directory = CallerFiles(data.callers_path, data.keys_dir).load()
        return directory, Seal.from_keys(data.keys_dir) if directory.callers else None
    except (CallersError, SealError) as exc:
        raise CopyError(str(exc)) from None


def copy_registry(sqlite_path: Path | str, url: str) -> dict:
    """Copy the registry at ``sqlite_path`` and its data directory's callers into the PostgreSQL
    registry ``url`` (migrated first); returns the rows copied per table and the revision the
    registry continues from."""
    path = Path(sqlite_path)
    if not path.is_file():
        raise CopyError(f"{path}: no such registry file")
    callers, seal = _callers(Settings(data_dir=path.parent))
    migrate(url)
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    try:
        source.execute("BEGIN")  # one consistent view of the file
        now = time.time()
        rows = {table.name: _source_rows(source, table, now) for table in TABLES}
        revision = source.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()[0]
    except sqlite3.Error as exc:
        raise CopyError(f"{path}: cannot read the registry: {exc}") from None
    finally:
        source.close()
    with unavailable(url), connect(url) as conn, conn.transaction():
        conn.execute("SELECT value FROM meta WHERE key = 'revision' FOR UPDATE")
        for table in TABLES:
            if table.merge is None and conn.execute(f"SELECT EXISTS (SELECT FROM {table.name})").fetchone()[0]:
                raise CopyError(f"the PostgreSQL registry already has {table.name}: copy only into a new one")
        if callers.callers and conn.execute("SELECT EXISTS (SELECT FROM callers)").fetchone()[0]:
            raise CopyError("the PostgreSQL registry already has callers: copy only into a new one")
        copied = {name: len(found) for name, found in rows.items()}
        for table in TABLES:
            if rows[table.name]:
                marks = ", ".join(["%s"] * len(rows[table.name][0]))
                with conn.cursor() as cursor:
                    cursor.executemany(f"INSERT INTO {table.name} ({table.columns}) VALUES ({marks}) "
                                       f"{table.merge or ''}", rows[table.name])
        conn.execute("UPDATE meta SET value = greatest(value, %s) WHERE key = 'revision'", (revision,))
        notify(conn, LICENSES)
        copied.update(insert_callers(conn, callers, seal) if seal else {"callers": 0, "caller_keys": 0})
    return {"copied": copied, "revision": revision}
