"""Signals between the processes that share one registry database: generations, tallies, claims.

Workers of one ``serve`` (and, behind a shared database, several hosts) must agree on things no
single process sees whole: that the policy was reloaded, how many failed authentications one
address caused across all workers, and that a notification was sent once, not once per worker.
That state lives here, next to the licenses, never in a process:

- a *generation* is a counter a process bumps and the others poll (``policy``: reload it);
- a *tally* adds each worker's counts per subject and time window and returns the totals;
- a *claim* is taken by exactly one process, ever (one notification per event).

Tables of their own in the registry's SQLite file, on a connection of their own.
"""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Iterable, Mapping, Protocol

_SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tallies (
    subject TEXT NOT NULL, window INTEGER NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (subject, window)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, at_us INTEGER NOT NULL) WITHOUT ROWID;
"""
POLICY_GENERATION = "policy"  # bumped when policy.toml is to be reloaded by every worker
_KEEP_WINDOWS = 2  # tallies older than this many windows are dropped


class Signals(Protocol):
    def generation(self, name: str) -> int: ...

    def bump(self, name: str) -> int:
        """Increment a generation; returns its new value."""

    def tally(self, window: int, counts: Mapping[str, int]) -> dict[str, int]:
        """Add ``counts`` to the subjects' totals in ``window``; returns those totals."""

    def claim(self, keys: Iterable[str]) -> list[str]:
        """The keys this call is the first ever to claim."""

    def close(self) -> None: ...


class SqliteSignals:
    def __init__(self, path: Path | str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)

    def generation(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM generations WHERE name=?", (name,)).fetchone()
        return row[0] if row else 0

    def bump(self, name: str) -> int:
        return self._db.execute("INSERT INTO generations VALUES (?, 1) ON CONFLICT(name) DO UPDATE "
                                "SET value=value+1 RETURNING value", (name,)).fetchone()[0]

    def tally(self, window: int, counts: Mapping[str, int]) -> dict[str, int]:
        if not counts:
            return {}
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            totals = {subject: db.execute(
                "INSERT INTO tallies VALUES (?,?,?) ON CONFLICT DO UPDATE SET count=count+excluded.count "
                "RETURNING count", (subject, window, n)).fetchone()[0] for subject, n in counts.items()}
            db.execute("DELETE FROM tallies WHERE window < ?", (window - _KEEP_WINDOWS,))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return totals

    def claim(self, keys: Iterable[str]) -> list[str]:
        now_us = int(time.time() * 1_000_000)
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            won = [key for key in keys
                   if db.execute("INSERT OR IGNORE INTO claims VALUES (?,?)", (key, now_us)).rowcount == 1]
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return won

    def close(self) -> None:
        self._db.close()
