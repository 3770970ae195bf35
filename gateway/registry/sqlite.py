"""SQLite registry store (WAL): shared by every worker process on one host.

Check-and-consume runs in ``BEGIN IMMEDIATE`` so two processes can never both take the last seat
or the last unit of a quota. Licenses are stored as their JSON document plus the columns that
are looked up; a global revision counter lets every process pick up others' changes cheaply.
"""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import orjson

from gateway import filemodes
from gateway.licenses import from_us, stored_license, to_us
from gateway.registry import Metered, license_doc
from gateway.registry.holders import SEAT_TOUCH_US, SeatHolders
from gateway.registry.writes import LicenseWrites, now_us
from gateway.types import Decision, License, Outcome, Usage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('revision', 0);
CREATE TABLE IF NOT EXISTS licenses (
    license_id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    doc TEXT NOT NULL,
    rev INTEGER NOT NULL,
    created_us INTEGER NOT NULL,
    updated_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS licenses_by_rev ON licenses(rev);
-- The moment each license's stored state dates from (gateway.registry.admit_bundle).
CREATE TABLE IF NOT EXISTS dated (
    license_id TEXT PRIMARY KEY, dated_us INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seats (
    license_id TEXT NOT NULL, user_id TEXT NOT NULL, last_seen_us INTEGER NOT NULL,
    PRIMARY KEY (license_id, user_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage (
    license_id TEXT NOT NULL, quota_key TEXT NOT NULL, period_start_us INTEGER NOT NULL,
    used INTEGER NOT NULL,
    PRIMARY KEY (license_id, quota_key, period_start_us)
) WITHOUT ROWID;
"""
_NO_USAGE = Usage()


class SqliteStore(LicenseWrites):
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        filemodes.private_file(self.path)  # key hashes: 0600 even with data_group_read
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._holders = SeatHolders()
        self._pending_holders: list[tuple[str, str, int, int | None]] = []  # applied once committed
        with self._txn():
            for statement in filter(str.strip, _SCHEMA.split(";")):
                self._db.execute(statement)

    @contextmanager
    def _txn(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            self._pending_holders.clear()
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        # Only what is committed may shortcut later decisions.
        for license_id, user_id, last_seen_us, seats_used in self._pending_holders:
            self._holders.remember(license_id, user_id, last_seen_us, seats_used)
        self._pending_holders.clear()

    def _revision(self) -> int:
        return self._db.execute("SELECT value FROM meta WHERE key='revision'").fetchone()[0]

    def licenses_since(self, revision: int) -> tuple[int, list[License]]:
        current = self._revision()
        if current == revision:
            return current, []
        rows = self._db.execute("SELECT doc FROM licenses WHERE rev > ?", (revision,)).fetchall()
        return current, [stored_license(orjson.loads(doc)) for (doc,) in rows]

    def _write(self) -> Iterator[sqlite3.Connection]:
        return self._txn()

    @staticmethod
    def _date(db: sqlite3.Connection, license_id: str, dated_us: int) -> None:
        db.execute("INSERT INTO dated VALUES (?,?) ON CONFLICT(license_id) DO UPDATE SET "
                   "dated_us=max(dated_us, excluded.dated_us)", (license_id, dated_us))

    def _put(self, db: sqlite3.Connection, licenses: Iterable[License], dated_us: int) -> int:
        now = now_us()
        changed = 0
        rev = self._revision() + 1
        for lic in licenses:
            doc = license_doc(lic)
            row = db.execute("SELECT doc FROM licenses WHERE license_id=?", (lic.license_id,)).fetchone()
            if row and row[0] == doc:
                continue
            db.execute(
                "INSERT INTO licenses VALUES (?,?,?,?,?,?) ON CONFLICT(license_id) DO UPDATE SET "
                "key_hash=excluded.key_hash, doc=excluded.doc, rev=excluded.rev, updated_us=excluded.updated_us",
                (lic.license_id, lic.key_hash, doc, rev, now, now))
            self._date(db, lic.license_id, dated_us)
            changed += 1
        if changed:
            db.execute("UPDATE meta SET value=? WHERE key='revision'", (rev,))
        return changed

    def get(self, license_id: str) -> License | None:
        row = self._db.execute("SELECT doc FROM licenses WHERE license_id=?", (license_id,)).fetchone()
        return stored_license(orjson.loads(row[0])) if row else None

    def timestamps(self) -> dict[str, tuple[datetime, datetime]]:
        """When each license entered the registry and last changed (for the analytics snapshot)."""
        rows = self._db.execute("SELECT license_id, created_us, updated_us FROM licenses")
        return {lid: (from_us(c), from_us(u)) for lid, c, u in rows}

    def seats_in_use(self, license_id: str, now: datetime, ttl_days: int) -> int:
        since = to_us(now) - ttl_days * 86400 * 1_000_000
        return self._db.execute("SELECT COUNT(*) FROM seats WHERE license_id=? AND last_seen_us>=?",
                                (license_id, since)).fetchone()[0]

    async def decide_many(self, checks: Sequence[Metered]) -> list[Decision]:
        """Decide ``checks`` in order; those that need the database share one ``BEGIN IMMEDIATE``.

        A check that reads no usage, and a seat holder's check this process can answer from
        memory, changes nothing, so it is decided outside the transaction (where it falls in the
        order does not matter); only if some check needs the database is one opened."""
        decisions = [self._from_memory(check) for check in checks]
        if None in decisions:
            with self._txn() as db:
                for i, check in enumerate(checks):
                    if decisions[i] is None:
                        decisions[i] = self._decide(db, check)
        return decisions

    def _from_memory(self, check: Metered) -> Decision | None:
        """The decision of a check that needs no transaction, else None."""
        meter = check.meter
        if meter.seat_limit is None and meter.quota is None:
            return check.decide(_NO_USAGE)
        if meter.quota is None and check.user_id is not None:
            seats = self._holders.recent(check.lic.license_id, check.user_id, to_us(check.now))
            if seats is not None:  # gateway.registry.holders: no transaction needed
                return check.decide(Usage(seats_used=seats, holds_seat=True))
        return None

    def _decide(self, db: sqlite3.Connection, check: Metered) -> Decision:
        """Read the usage ``check`` names, decide, and write its effects (inside a transaction)."""
        lic, meter, user_id = check.lic, check.meter, check.user_id
        now_us = to_us(check.now)
        seats_used, last_seen = 0, None
        if meter.seat_limit is not None:
            since = to_us(meter.seats_since)
            seats_used = db.execute("SELECT COUNT(*) FROM seats WHERE license_id=? AND last_seen_us>=?",
                                    (lic.license_id, since)).fetchone()[0]
            if user_id is not None:
                row = db.execute("SELECT last_seen_us FROM seats WHERE license_id=? AND user_id=?",
                                 (lic.license_id, user_id)).fetchone()
                last_seen = row[0] if row and row[0] >= since else None
        quota_used, period = 0, None
        if meter.quota is not None:
            period = to_us(meter.period_start)
            row = db.execute("SELECT used FROM usage WHERE license_id=? AND quota_key=? AND period_start_us=?",
                             (lic.license_id, meter.quota_key, period)).fetchone()
            quota_used = row[0] if row else 0
        decision = check.decide(Usage(seats_used=seats_used, holds_seat=last_seen is not None, quota_used=quota_used))
        if decision.outcome is Outcome.DENY:
            return decision
        if user_id is not None and meter.seat_limit is not None:
            if last_seen is None or now_us - last_seen > SEAT_TOUCH_US:
                db.execute("INSERT INTO seats VALUES (?,?,?) ON CONFLICT DO UPDATE SET "
                           "last_seen_us=excluded.last_seen_us", (lic.license_id, user_id, now_us))
                last_seen = now_us
            self._pending_holders.append((lic.license_id, user_id, last_seen, decision.seats_used))
        if decision.consume:
            db.execute("INSERT INTO usage VALUES (?,?,?,?) ON CONFLICT DO UPDATE SET used=used+excluded.used",
                       (lic.license_id, meter.quota_key, period, decision.consume))
        return decision

    def close(self) -> None:
        self._db.close()
