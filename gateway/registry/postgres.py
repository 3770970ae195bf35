"""PostgreSQL registry store: one truth for several gateway hosts (SPEC §11).

Same tables and semantics as :class:`gateway.registry.sqlite.SqliteStore` (schema:
``gateway/registry/migrations``). The sync methods serve the CLI and the admin paths on one
connection of their own; the hot path, :meth:`PostgresStore.decide_many`, is async on a small pool.

Check-and-consume, across hosts: a batch first takes a transaction-scoped advisory lock per
license it meters, in one global order (so two batches never deadlock), then reads the seats
and counters, decides and writes, and commits. Another host's batch on the same license waits
for the commit and then reads what it wrote, so N hosts never grant more seats or quota than
allowed. The effects of earlier checks of a batch are applied to what later ones see in memory,
so a batch costs two round trips whatever its size: locks and reads, then writes and commit.

The ``decide_many`` calls of one event-loop turn go out as one such batch. A batch that fails
before its commit was sent is retried once on a fresh connection (nothing of it was written); a
failure after that raises :class:`RegistryUnavailable` and is never retried, since the commit
may have happened: a unit is never counted twice, and one the caller was not granted may be
counted at most once. Every change of licenses notifies ``portcullis_changes`` in its transaction.
"""
from __future__ import annotations

import hashlib
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Iterable, Iterator, Sequence

import orjson
import psycopg

from gateway.licenses import from_us, stored_license, to_us
from gateway.registry import Metered, RegistryUnavailable, license_doc
from gateway.registry.holders import SEAT_TOUCH_US, SeatHolders
from gateway.registry.migrate import applied_versions
from gateway.registry.pgconn import LICENSES, AsyncSession, SyncSession, TurnBatcher, notify, unavailable, where
from gateway.registry.pgshared import PostgresNonces, PostgresSignals  # noqa: F401 (one import path)
from gateway.registry.writes import LicenseWrites, now_us
from gateway.types import Decision, License, Metering, Outcome, Usage

SCHEMA_VERSION = 1  # the oldest schema this code runs on (gateway/registry/migrations)
_POOL_SIZE = 4

_LOCK = "SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS t(k)"  # in the array's order
_SEATS = ("SELECT q.l, q.since, (SELECT count(*) FROM seats s WHERE s.license_id = q.l AND s.last_seen_us >= q.since) "
          "FROM unnest(%s::text[], %s::bigint[]) AS q(l, since)")
_HOLDERS = ("SELECT s.license_id, s.user_id, s.last_seen_us FROM seats s "
            "JOIN unnest(%s::text[], %s::text[]) AS q(l, u) ON s.license_id = q.l AND s.user_id = q.u")
_USAGE = ("SELECT u.license_id, u.quota_key, u.period_start_us, u.used FROM usage u "
          "JOIN unnest(%s::text[], %s::text[], %s::bigint[]) AS q(l, k, p) "
          "ON u.license_id = q.l AND u.quota_key = q.k AND u.period_start_us = q.p")
_WRITE_SEATS = ("INSERT INTO seats SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[]) "
                "ON CONFLICT (license_id, user_id) DO UPDATE SET last_seen_us = excluded.last_seen_us")
_WRITE_USAGE = ("INSERT INTO usage SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[]) "
                "ON CONFLICT (license_id, quota_key, period_start_us) DO UPDATE SET used = usage.used + excluded.used")


def lock_key(license_id: str) -> int:
    """The advisory lock of a license: the same signed 64-bit number on every host."""
    return int.from_bytes(hashlib.blake2b(license_id.encode(), digest_size=8).digest(), "big", signed=True)


def _metered(meter: Metering) -> bool:
    return meter.seat_limit is not None or meter.quota is not None


class _View:
    """The usage a batch read, with the effects of the checks decided so far applied, and what
    those effects write. Every change is journaled, so a failed call's changes can be undone."""

    def __init__(self, seat_rows: list[tuple], holder_rows: list[tuple], usage_rows: list[tuple]) -> None:
        self.counts = {(lid, since): n for lid, since, n in seat_rows}  # seats in use as stored
        self.stored = {(lid, uid): last for lid, uid, last in holder_rows}  # last uses as stored
        self.seen = dict(self.stored)  # last uses now
        self.touched: dict[str, frozenset[str]] = {}  # license -> users whose last use the batch rewrote
        self.used = {(lid, key, p): n for lid, key, p, n in usage_rows}
        self.seat_writes: dict[tuple[str, str], int] = {}
        self.usage_writes: dict[tuple[str, str, int], int] = {}
        self._journal: list[tuple[dict, Any, Any]] = []  # (mapping, key, previous value or _MISSING)

    def seats_used(self, license_id: str, since: int) -> int:
        n = self.counts[(license_id, since)]
        for user in self.touched.get(license_id, ()):
            old, new = self.stored.get((license_id, user)), self.seen[(license_id, user)]
            n += (new >= since) - (old is not None and old >= since)
        return n

    def last_use(self, license_id: str, user_id: str, since: int) -> int | None:
        value = self.seen.get((license_id, user_id))
        return value if value is not None and value >= since else None

    def touch(self, license_id: str, user_id: str, now_us: int) -> None:
        self._put(self.seen, (license_id, user_id), now_us)
        self._put(self.seat_writes, (license_id, user_id), now_us)
        self._put(self.touched, license_id, self.touched.get(license_id, frozenset()) | {user_id})

    def consume(self, counter: tuple[str, str, int], units: int) -> None:
        self._put(self.used, counter, self.used.get(counter, 0) + units)
        self._put(self.usage_writes, counter, self.usage_writes.get(counter, 0) + units)

    def _put(self, mapping: dict, key: Any, value: Any) -> None:
        self._journal.append((mapping, key, mapping.get(key, _MISSING)))
        mapping[key] = value

    def mark(self) -> int:
        return len(self._journal)

    def undo(self, mark: int) -> None:
        while len(self._journal) > mark:
            mapping, key, previous = self._journal.pop()
            if previous is _MISSING:
                del mapping[key]
            else:
                mapping[key] = previous


_MISSING = object()


class _Batch:
    """The checks of one transaction: what to lock and read, then (pure) the decisions and writes.

    Each check sees the effects of the ones before it (:class:`_View`); when a call's ``decide``
    raises, that call alone fails and its effects are undone, as its own transaction would be.
    """

    def __init__(self, groups: list[Sequence[Metered]], holders: SeatHolders) -> None:
        self.groups, self.holders = groups, holders
        self.results: list[list[Decision] | BaseException] = []
        self.view = _View([], [], [])
        self.remembered: list[tuple[str, str, int, int | None]] = []  # seat holders, once committed
        # Recent seat holders are decided without the database (gateway.registry.holders); taken
        # once here, as another batch's commit may add holders before this one decides.
        self.cached: dict[int, int] = {}
        for c in (c for group in groups for c in group):
            if c.meter.quota is None and c.user_id is not None and c.meter.seat_limit is not None:
                seats = holders.recent(c.lic.license_id, c.user_id, to_us(c.now))
                if seats is not None:
                    self.cached[id(c)] = seats
        self.todo = [c for group in groups for c in group if _metered(c.meter) and id(c) not in self.cached]

    def reads(self) -> list[tuple[str, tuple]]:
        """The statements to run, in order, before :meth:`decide`: locks, then reads."""
        seated = [c for c in self.todo if c.meter.seat_limit is not None]
        windows = sorted({(c.lic.license_id, to_us(c.meter.seats_since)) for c in seated})
        pairs = sorted({(c.lic.license_id, c.user_id) for c in seated if c.user_id is not None})
        counters = sorted({(c.lic.license_id, c.meter.quota_key, to_us(c.meter.period_start))
                           for c in self.todo if c.meter.quota is not None})
        return [(_LOCK, (sorted({lock_key(c.lic.license_id) for c in self.todo}),)),
                (_SEATS, _columns(windows, 2)), (_HOLDERS, _columns(pairs, 2)), (_USAGE, _columns(counters, 3))]

    def decide(self, rows: Sequence[list[tuple]] = ([], [], [], [])) -> None:
        """Decide every check from the rows the reads returned (a fresh start on each call; no
        rows when no check needs the database)."""
        self.view, self.results, self.remembered = _View(*rows[1:]), [], []
        for group in self.groups:
            mark, held = self.view.mark(), []
            try:
                decisions = [self._one(c, held) for c in group]
            except Exception as exc:  # that call's own failure: its effects are undone
                self.view.undo(mark)
                self.results.append(exc)
                continue
            self.results.append(decisions)
            self.remembered += held

    def _one(self, c: Metered, held: list) -> Decision:
        meter, license_id, view = c.meter, c.lic.license_id, self.view
        if not _metered(meter):
            return c.decide(Usage())
        cached = self.cached.get(id(c))
        if cached is not None:
            return c.decide(Usage(seats_used=cached, holds_seat=True))
        now_us = to_us(c.now)
        seats_used, last = 0, None
        if meter.seat_limit is not None:
            since = to_us(meter.seats_since)
            seats_used = view.seats_used(license_id, since)
            last = None if c.user_id is None else view.last_use(license_id, c.user_id, since)
        quota_used, counter = 0, None
        if meter.quota is not None:
            counter = (license_id, meter.quota_key, to_us(meter.period_start))
            quota_used = view.used.get(counter, 0)
        decision = c.decide(Usage(seats_used=seats_used, holds_seat=last is not None, quota_used=quota_used))
        if decision.outcome is Outcome.DENY:
            return decision
        if c.user_id is not None and meter.seat_limit is not None:
            if last is None or now_us - last > SEAT_TOUCH_US:
                view.touch(license_id, c.user_id, now_us)
                last = now_us
            held.append((license_id, c.user_id, last, decision.seats_used))
        if decision.consume:
            view.consume(counter, decision.consume)
        return decision

    def writes(self) -> list[tuple[str, tuple]]:
        """The statements that apply the decisions' effects (none for a batch of denies)."""
        seats = [(*key, at) for key, at in sorted(self.view.seat_writes.items())]
        usage = [(*key, n) for key, n in sorted(self.view.usage_writes.items())]
        return ([(_WRITE_SEATS, _columns(seats, 3))] if seats else []) + \
            ([(_WRITE_USAGE, _columns(usage, 4))] if usage else [])

    def committed(self) -> list[list[Decision] | BaseException]:
        """Once the transaction committed: remember its seat holders, hand out the results."""
        for entry in self.remembered:
            self.holders.remember(*entry)
        return self.results


def _columns(rows: list[tuple], width: int) -> tuple[list, ...]:
    """Rows as column lists, the parameters of an ``unnest`` of arrays."""
    return tuple(list(column) for column in zip(*rows)) if rows else tuple([] for _ in range(width))


class PostgresStore(LicenseWrites):
    """The :class:`gateway.registry.Store` on PostgreSQL; the schema must be migrated
    (``portcullis migrate``), else :class:`RegistryUnavailable` says so."""

    PARAM = "%s"

    def __init__(self, url: str, pool_size: int = _POOL_SIZE) -> None:
        self.url = url
        self._session = SyncSession(url)
        self._async = AsyncSession(url, pool_size)
        self._holders = SeatHolders()
        self._batcher: TurnBatcher[Metered, Decision] = TurnBatcher(self._decide_turn)
        self.transactions = 0  # check-and-consume transactions committed by this store
        with self._session() as conn:
            version = max(applied_versions(conn), default=0)
        if version < SCHEMA_VERSION:
            self._session.close()
            raise RegistryUnavailable(f"the registry {where(url)} has schema version {version}, this gateway needs "
                                      f"{SCHEMA_VERSION}: run portcullis migrate")

    @contextmanager
    def _write(self) -> Iterator[psycopg.Connection]:
        """A transaction that changes licenses: one at a time across every host (as SQLite's
        ``BEGIN IMMEDIATE`` on one), so a check followed by a write sees no concurrent change."""
        with self._session() as conn, conn.transaction():
            conn.execute("SELECT value FROM meta WHERE key = 'revision' FOR UPDATE")
            yield conn

    # -- licenses -------------------------------------------------------------------------
    def licenses_since(self, revision: int) -> tuple[int, list[License]]:
        with self._session() as conn:
            rows = conn.execute("SELECT m.value, l.doc FROM meta m LEFT JOIN licenses l ON l.rev > %s "
                                "WHERE m.key = 'revision'", (revision,)).fetchall()
        return rows[0][0], [stored_license(orjson.loads(doc)) for _, doc in rows if doc is not None]

    @staticmethod
    def _date(conn: psycopg.Connection, license_id: str, dated_us: int) -> None:
        conn.execute("INSERT INTO dated VALUES (%s, %s) ON CONFLICT (license_id) DO UPDATE "
                     "SET dated_us = greatest(dated.dated_us, excluded.dated_us)", (license_id, dated_us))

    def _put(self, conn: psycopg.Connection, licenses: Iterable[License], dated_us: int) -> int:
        now = now_us()
        rev = conn.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()[0] + 1
        changed = 0
        for lic in licenses:
            doc = license_doc(lic)
            row = conn.execute("SELECT doc FROM licenses WHERE license_id = %s", (lic.license_id,)).fetchone()
            if row and row[0] == doc:
                continue
            conn.execute("INSERT INTO licenses VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (license_id) DO UPDATE "
                         "SET key_hash = excluded.key_hash, doc = excluded.doc, rev = excluded.rev, "
                         "updated_us = excluded.updated_us", (lic.license_id, lic.key_hash, doc, rev, now, now))
            self._date(conn, lic.license_id, dated_us)
            changed += 1
        if changed:
            conn.execute("UPDATE meta SET value = %s WHERE key = 'revision'", (rev,))
            notify(conn, LICENSES)
        return changed

    def get(self, license_id: str) -> License | None:
        with self._session() as conn:
            row = conn.execute("SELECT doc FROM licenses WHERE license_id = %s", (license_id,)).fetchone()
        return stored_license(orjson.loads(row[0])) if row else None

    def timestamps(self) -> dict[str, tuple[datetime, datetime]]:
        with self._session() as conn:
            rows = conn.execute("SELECT license_id, created_us, updated_us FROM licenses").fetchall()
        return {lid: (from_us(c), from_us(u)) for lid, c, u in rows}

    def seats_in_use(self, license_id: str, now: datetime, ttl_days: int) -> int:
        since = to_us(now) - ttl_days * 86400 * 1_000_000
        with self._session() as conn:
            return conn.execute("SELECT count(*) FROM seats WHERE license_id = %s AND last_seen_us >= %s",
                                (license_id, since)).fetchone()[0]

    # -- check-and-consume ----------------------------------------------------------------
    async def decide_many(self, checks: Sequence[Metered]) -> list[Decision]:
        """See :meth:`gateway.registry.Store.decide_many`; the calls of one loop turn share one
        transaction. Raises :class:`RegistryUnavailable` when the database cannot be reached."""
        return await self._batcher.submit(checks)

    async def _decide_turn(self, groups: list[Sequence[Metered]]) -> list[list[Decision] | BaseException]:
        batch = _Batch(groups, self._holders)
        if not batch.todo:
            batch.decide()
            return batch.committed()
        retry = True
        while True:
            decided = False
            try:
                with unavailable(self.url):
                    async with self._async.connection() as conn, conn.pipeline():
                        async with conn.transaction():
                            cursors = [await conn.execute(sql, params) if params[0] else None
                                       for sql, params in batch.reads()]  # a read of nothing is not sent
                            batch.decide([await c.fetchall() if c else [] for c in cursors])
                            decided = True  # from here on, whether a failure committed is unknown
                            for sql, params in batch.writes():
                                await conn.execute(sql, params)
            except RegistryUnavailable:
                if decided or not retry:
                    raise
                retry = False  # nothing was written: a stale pooled connection; once more on a fresh one
                continue
            self.transactions += 1
            return batch.committed()

    def close(self) -> None:
        self._async.close()
        self._session.close()
