"""Nonces shared by every process on one registry database, so a replay cannot pick a worker.

With ``serve --workers N`` the kernel hands each connection to any worker; a nonce remembered
in one worker's memory would let the same signed request through once more on each other
worker. Here a nonce is taken with one ``INSERT OR IGNORE`` into the registry's SQLite file
(about as cheap as the HMAC itself): whoever inserts first wins, everyone else sees a replay.
The table needs no durability (``synchronous=OFF``): after a crash the gateway restarts with an
empty window, as a single worker's memory would.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

_PURGE_EVERY = 4096  # inserts between deletions of expired nonces


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

    def add(self, nonce: str, now: float) -> bool:
        self._adds += 1
        if self._adds % _PURGE_EVERY == 0:
            self._db.execute("DELETE FROM nonces WHERE expires <= ?", (now,))
        # An expired entry with this nonce is replaced: the timestamp check already refuses
        # any request old enough to carry it.
        cursor = self._db.execute("INSERT INTO nonces VALUES (?, ?) ON CONFLICT(nonce) DO UPDATE "
                                  "SET expires=excluded.expires WHERE nonces.expires <= ?",
                                  (nonce, now + 2 * self._window, now))
        return cursor.rowcount == 1

    def close(self) -> None:
        self._db.close()
