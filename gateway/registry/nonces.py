"""Nonces shared by every process on one registry database, so a replay cannot pick a worker.

With ``serve --workers N`` the kernel hands each connection to any worker; a nonce remembered
in one worker's memory would let the same signed request through once more on each other
worker. Here a nonce is taken with one insert into the registry's SQLite file: whoever inserts
first wins, everyone else sees a replay. ``synchronous=OFF`` spares an fsync per request: what
was committed is in the kernel, so it survives the gateway's restart, a SIGKILL too; only a
crash of the machine can lose the last moments.

A single worker keeps its nonces in :class:`gateway.nonce_journal.JournaledNonces` instead; at
start each takes in the other's unexpired nonces (:meth:`SqliteNonces.unexpired`,
:meth:`SqliteNonces.absorb`), so changing ``--workers`` across a restart opens no replay window.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterable, Iterator, Protocol

_PURGE_EVERY = 4096  # inserts between deletions of expired nonces


class SharedNonces(Protocol):
    """Nonces in the registry, shared by every process that uses it."""

    async def record(self, nonce: str, now: float) -> bool:
        """Record a nonce; False if it was already seen within the window (:class:`gateway.auth.Nonces`)."""

    def unexpired(self, now: float) -> Iterator[tuple[str, int]]: ...

    def absorb(self, entries: Iterable[tuple[str, int]]) -> None: ...

    def close(self) -> None: ...


class SqliteNonces:
    """Same contract as :class:`gateway.auth.NonceCache`: ``add`` is False for a replay."""

    def __init__(self, path: Path | str, window_s: int) -> None:
        self._window = window_s
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.execute("CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY, expires REAL NOT NULL) "
                         "WITHOUT ROWID")
        self._adds = 0

    async def record(self, nonce: str, now: float) -> bool:
        return self.add(nonce, now)

    def add(self, nonce: str, now: float) -> bool:
        self._adds += 1
        if self._adds % _PURGE_EVERY == 0:
            self._db.execute("DELETE FROM nonces WHERE expires <= ?", (now,))
        # An expired entry with this nonce is replaced: the timestamp check already refuses
        # any request old enough to carry it.
        # (+1: at exactly now + 2 × window a request stamped now + window still passes the check.)
        cursor = self._db.execute("INSERT INTO nonces VALUES (?, ?) ON CONFLICT(nonce) DO UPDATE "
                                  "SET expires=excluded.expires WHERE nonces.expires <= ?",
                                  (nonce, now + 2 * self._window + 1, now))
        return cursor.rowcount == 1

    def unexpired(self, now: float) -> Iterator[tuple[str, int]]:
        """(nonce, second it expires, rounded up) of every nonce still in force."""
        for nonce, expires in self._db.execute("SELECT nonce, expires FROM nonces WHERE expires > ?", (now,)):
            yield nonce, int(expires) + 1

    def absorb(self, entries: Iterable[tuple[str, int]]) -> None:
        """Take in nonces (nonce, second it expires) accepted elsewhere, in one transaction."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT INTO nonces VALUES (?, ?) ON CONFLICT(nonce) DO UPDATE "
                                 "SET expires=max(expires, excluded.expires)", entries)

    def close(self) -> None:
        self._db.close()
