"""The nonces and signals of several hosts, in the PostgreSQL registry.

Same contracts as :class:`gateway.registry.nonces.SqliteNonces` and
:class:`gateway.registry.signals.SqliteSignals`, with every host instead of every worker of one:
a nonce recorded by one host is a replay on all; a generation bumped by one is seen by all (and
announced on ``portcullis_changes``, so they need not wait for their next poll).
"""
from __future__ import annotations

import time
from typing import Iterable, Iterator, Mapping, Sequence

from gateway.registry import RegistryUnavailable
from gateway.registry.pgconn import AsyncSession, SyncSession, TurnBatcher, notify, unavailable

_PURGE_EVERY = 4096  # nonces recorded between deletions of expired ones
_KEEP_WINDOWS = 2  # tallies older than this many windows are dropped
_RECORD = ("INSERT INTO nonces SELECT * FROM unnest(%s::text[], %s::float8[]) ON CONFLICT (nonce) DO UPDATE "
           "SET expires = excluded.expires WHERE nonces.expires <= %s RETURNING nonce")


class PostgresNonces:
    """:meth:`record` is False for a replay; the calls of one loop turn are one statement."""

    def __init__(self, url: str, window_s: int, pool_size: int = 2) -> None:
        self.url = url
        self._window = window_s
        self._session = SyncSession(url)
        self._async = AsyncSession(url, pool_size)
        self._batcher: TurnBatcher[tuple[str, float], bool] = TurnBatcher(self._record_turn)
        self._recorded = 0

    def _expiry(self, now: float) -> float:
        # Kept until the latest moment a request carrying it could still pass the timestamp
        # check (+1: at exactly now + 2 × window a request stamped now + window still passes).
        return now + 2 * self._window + 1

    def _purge_due(self, n: int) -> bool:
        before, self._recorded = self._recorded, self._recorded + n
        return before // _PURGE_EVERY != self._recorded // _PURGE_EVERY

    async def record(self, nonce: str, now: float) -> bool:
        """Record a nonce without blocking the loop; False if it was already seen within the window."""
        return (await self._batcher.submit([(nonce, now)]))[0]

    def _statements(self, entries: Sequence[tuple[str, float]]) -> tuple[list[tuple[str, tuple]], list[int]]:
        """The statements recording ``entries`` (purging the expired now and then), and for each
        entry the position of its first occurrence: a nonce twice in one turn is a replay the
        second time, and one statement may not insert a row twice."""
        first: dict[str, int] = {}
        for i, (nonce, _) in enumerate(entries):
            first.setdefault(nonce, i)
        oldest = min(now for _, now in entries)
        unique = sorted(first)  # rows locked in one order by every host: no deadlock between two turns
        statements = [(_RECORD, (unique, [self._expiry(entries[first[n]][1]) for n in unique], oldest))]
        if self._purge_due(len(entries)):
            statements.insert(0, ("DELETE FROM nonces WHERE expires <= %s", (oldest,)))
        return statements, [first[nonce] for nonce, _ in entries]

    @staticmethod
    def _verdicts(entries: Sequence[tuple[str, float]], firsts: list[int], inserted: set[str]) -> list[bool]:
        return [firsts[i] == i and nonce in inserted for i, (nonce, _) in enumerate(entries)]

    async def _record_turn(self, groups: list[Sequence[tuple[str, float]]]) -> list[list[bool]]:
        """One statement for the turn's nonces; tried once more on a fresh connection if it fails.

        While the registry is unreachable nothing here is used (the gateway refuses at once), so
        the first turn after an outage meets the connections the server's restart closed; the
        second try opens a new one. The price: if the server went down after committing a turn
        but before answering, and is back at once, that turn's requests are refused as replays,
        never accepted twice."""
        entries = [entry for group in groups for entry in group]
        statements, firsts = self._statements(entries)
        for retry in (True, False):
            try:
                with unavailable(self.url):
                    async with self._async.connection() as conn, conn.pipeline(), conn.transaction():
                        for sql, params in statements:
                            cursor = await conn.execute(sql, params)
                        inserted = {nonce for (nonce,) in await cursor.fetchall()}
                break
            except RegistryUnavailable:
                if not retry:
                    raise
        verdicts = iter(self._verdicts(entries, firsts, inserted))
        return [[next(verdicts) for _ in group] for group in groups]

    def unexpired(self, now: float) -> Iterator[tuple[str, int]]:
        """(nonce, second it expires, rounded up) of every nonce still in force."""
        with self._session() as conn:
            rows = conn.execute("SELECT nonce, expires FROM nonces WHERE expires > %s", (now,)).fetchall()
        for nonce, expires in rows:
            yield nonce, int(expires) + 1

    def absorb(self, entries: Iterable[tuple[str, int]]) -> None:
        """Take in nonces (nonce, second it expires) accepted elsewhere, in one transaction."""
        rows = list(entries)
        if not rows:
            return
        with self._session() as conn, conn.transaction():
            conn.execute("INSERT INTO nonces AS n SELECT DISTINCT ON (nonce) nonce, expires "
                         "FROM unnest(%s::text[], %s::float8[]) AS t(nonce, expires) "
                         "ORDER BY nonce, expires DESC ON CONFLICT (nonce) DO UPDATE "
                         "SET expires = greatest(n.expires, excluded.expires)",
                         ([nonce for nonce, _ in rows], [float(expires) for _, expires in rows]))

    def close(self) -> None:
        self._async.close()
        self._session.close()


class PostgresSignals:
    """:class:`gateway.registry.signals.Signals` shared by every host (sync: none is on the hot path)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._session = SyncSession(url)

    def generation(self, name: str) -> int:
        with self._session() as conn:
            row = conn.execute("SELECT value FROM generations WHERE name = %s", (name,)).fetchone()
        return row[0] if row else 0

    def bump(self, name: str) -> int:
        """Increment a generation and announce it (payload: its name, e.g. ``policy``)."""
        with self._session() as conn, conn.transaction():
            value = conn.execute("INSERT INTO generations VALUES (%s, 1) ON CONFLICT (name) DO UPDATE "
                                 "SET value = generations.value + 1 RETURNING value", (name,)).fetchone()[0]
            notify(conn, name)
        return value

    def tally(self, window: int, counts: Mapping[str, int]) -> dict[str, int]:
        if not counts:
            return {}
        subjects = sorted(counts)  # one order on every host: concurrent tallies never deadlock
        with self._session() as conn, conn.transaction():
            rows = conn.execute(
                "INSERT INTO tallies SELECT s, %s, n FROM unnest(%s::text[], %s::bigint[]) AS t(s, n) "
                "ON CONFLICT (subject, window_no) DO UPDATE SET count = tallies.count + excluded.count "
                "RETURNING subject, count", (window, subjects, [counts[s] for s in subjects])).fetchall()
            conn.execute("DELETE FROM tallies WHERE window_no < %s", (window - _KEEP_WINDOWS,))
        return dict(rows)

    def claim(self, keys: Iterable[str]) -> list[str]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return []
        now_us = int(time.time() * 1_000_000)
        with self._session() as conn:
            won = {key for (key,) in conn.execute(
                "INSERT INTO claims SELECT k, %s FROM unnest(%s::text[]) AS t(k) ON CONFLICT DO NOTHING RETURNING key",
                (now_us, sorted(wanted))).fetchall()}
        return [key for key in wanted if key in won]

    def close(self) -> None:
        self._session.close()
