"""Callers in the PostgreSQL registry, shared by every host, their secrets sealed (SPEC §11).

The same :class:`gateway.callers.CallerStore` contract as ``callers.toml``: ``portcullis caller``
edits these tables when ``registry_url`` names PostgreSQL, and every host follows them. Each
secret is stored only sealed (:mod:`gateway.registry.seal`, bound to its caller and key id). Every
edit bumps ``meta.callers_revision`` and notifies ``portcullis_changes`` with ``callers`` in its
own transaction, so :meth:`PostgresCallers.version` is one indexed row, and a host hears of a
change at its commit, never before.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

import psycopg
from psycopg.types.json import Jsonb

from gateway.callers import Caller, CallerDirectory, CallersError, caller_from_table, new_key
from gateway.registry import RegistryUnavailable
from gateway.registry.pgconn import CALLERS, SyncSession, notify, where
from gateway.registry.seal import Seal, SealError

log = logging.getLogger("portcullis.callers")
_REVISION = "SELECT coalesce((SELECT value FROM meta WHERE key = 'callers_revision'), 0)"
_BUMP = ("INSERT INTO meta VALUES ('callers_revision', 1) "  # a row lost (emptied by hand) is made again
         "ON CONFLICT (key) DO UPDATE SET value = meta.value + 1")
_LOAD = ("SELECT c.caller_id, c.doc, k.key_id, k.sealed FROM callers c "
         "LEFT JOIN caller_keys k ON k.caller_id = c.caller_id ORDER BY c.caller_id, k.seq")


class PostgresCallers:
    """Callers of the registry at ``url``, opened with the seal key of ``keys_dir``."""

    def __init__(self, url: str, keys_dir) -> None:
        self.where = where(url)
        try:
            self._seal = Seal.from_keys(keys_dir)
        except SealError as exc:
            raise CallersError(str(exc)) from None
        self._session = SyncSession(url)
        self._revision: int | None = None
        self._reachable = True
        with self._session() as conn:
            if conn.execute("SELECT to_regclass('caller_keys')").fetchone()[0] is None:
                self._session.close()
                raise CallersError(f"the registry {self.where} has no callers tables: run portcullis migrate")

    # -- CallerSource ---------------------------------------------------------------------
    def version(self) -> int | None:
        """The callers' revision. While the registry cannot be reached, the last one read: nothing
        is known to have changed, and the callers in force stay."""
        try:
            with self._session() as conn:
                revision = conn.execute(_REVISION).fetchone()[0]
        except RegistryUnavailable as exc:
            if self._reachable:  # once an outage, not twice a second
                log.warning("callers: %s", exc, extra={"event": "callers_unreachable"})
                self._reachable = False
            return self._revision
        self._revision, self._reachable = revision, True
        return revision

    def load(self) -> CallerDirectory:
        try:
            with self._session() as conn:
                rows = conn.execute(_LOAD).fetchall()
        except RegistryUnavailable as exc:
            raise CallersError(str(exc)) from None
        tables: dict[str, dict] = {}
        secrets: dict[str, bytes] = {}
        for caller_id, doc, key_id, sealed in rows:
            table = tables.setdefault(caller_id, {**doc, "key_ids": []})
            if key_id is not None:
                try:
                    secrets[key_id] = self._seal.open(bytes(sealed), caller_id, key_id)
                except SealError as exc:
                    raise CallersError(f"the registry {self.where}: {exc}") from None
                table["key_ids"].append(key_id)
        callers = {name: caller_from_table(f"the registry {self.where}", name, table) for name, table in tables.items()}
        return CallerDirectory(callers, secrets)

    def close(self) -> None:
        self._session.close()

    # -- CallerStore: one transaction each, which bumps the revision and notifies ---------------
    def add(self, caller: Caller, with_key: bool = True) -> tuple[str, str] | None:
        if caller.key_ids:
            raise CallersError("a new caller's keys are made here, with their secrets: give none")
        with self._edit() as conn:
            inserted = conn.execute("INSERT INTO callers (caller_id, doc) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                                    (caller.caller_id, Jsonb(_doc(caller)))).rowcount
            if not inserted:
                raise CallersError(f"caller {caller.caller_id!r} already exists")
            return self._new_key(conn, caller.caller_id) if with_key else None

    def rotate(self, name: str) -> tuple[str, str]:
        with self._edit() as conn:
            self._lock(conn, name)
            return self._new_key(conn, name)

    def drop_key(self, name: str, key_id: str) -> None:
        with self._edit() as conn:
            if not conn.execute("DELETE FROM caller_keys WHERE caller_id = %s AND key_id = %s",
                                (name, key_id)).rowcount:
                raise CallersError(f"caller {name!r} has no key {key_id!r}")

    def limit(self, name: str, rate_limit_rps: float) -> None:
        with self._edit() as conn:
            if not conn.execute("UPDATE callers SET doc = jsonb_set(doc, '{rate_limit_rps}', to_jsonb(%s::float8)) "
                                "WHERE caller_id = %s", (rate_limit_rps, name)).rowcount:
                raise CallersError(f"no caller named {name!r}")

    def remove(self, name: str) -> None:
        with self._edit() as conn:
            conn.execute("DELETE FROM caller_keys WHERE caller_id = %s", (name,))
            if not conn.execute("DELETE FROM callers WHERE caller_id = %s", (name,)).rowcount:
                raise CallersError(f"no caller named {name!r}")

    @contextmanager
    def _edit(self) -> Iterator[psycopg.Connection]:
        """An edit's transaction; an edit that raises changes nothing and announces nothing."""
        with self._session() as conn, conn.transaction():
            yield conn
            _announce(conn)

    @staticmethod
    def _lock(conn: psycopg.Connection, name: str) -> None:
        if conn.execute("SELECT 1 FROM callers WHERE caller_id = %s FOR UPDATE", (name,)).fetchone() is None:
            raise CallersError(f"no caller named {name!r}")

    def _new_key(self, conn: psycopg.Connection, caller_id: str) -> tuple[str, str]:
        key_id, secret = new_key()
        conn.execute("INSERT INTO caller_keys (key_id, caller_id, sealed) VALUES (%s, %s, %s)",
                     (key_id, caller_id, self._seal.seal(secret, caller_id, key_id)))
        return key_id, secret.decode()


def insert_callers(conn: psycopg.Connection, directory: CallerDirectory, seal: Seal) -> dict[str, int]:
    """Write the callers of ``directory`` (``callers.toml`` and its secrets) in the transaction of
    ``conn``, each secret sealed (``portcullis registry copy``); the rows written per table. A key
    id listed without a secret never authenticated anyone and is left out."""
    keys = [(key_id, c.caller_id, seal.seal(directory.secrets[key_id], c.caller_id, key_id))
            for c in directory.callers.values() for key_id in c.key_ids if key_id in directory.secrets]
    with conn.cursor() as cursor:
        cursor.executemany("INSERT INTO callers (caller_id, doc) VALUES (%s, %s)",
                           [(c.caller_id, Jsonb(_doc(c))) for c in directory.callers.values()])
        cursor.executemany("INSERT INTO caller_keys (key_id, caller_id, sealed) VALUES (%s, %s, %s)", keys)
    _announce(conn)
    return {"callers": len(directory.callers), "caller_keys": len(keys)}


def _announce(conn: psycopg.Connection) -> None:
    """Every host follows: the revision it polls moves, and listeners hear it at the commit."""
    conn.execute(_BUMP)
    notify(conn, CALLERS)


def _doc(caller: Caller) -> dict:
    """A caller's row: its table without key ids (those are rows of ``caller_keys``)."""
    doc = caller.to_toml()
    del doc["key_ids"]
    return doc
