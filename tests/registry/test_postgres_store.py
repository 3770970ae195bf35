"""What the PostgreSQL registry adds to the store contract (tests/registry/test_store.py runs
that on both stores): the checks of one event-loop turn go out as one transaction, each seeing
the ones before it exactly as one by one; change notifications; a killed connection never
counts a unit twice nor grants one it did not take; nonces and signals shared by every host."""
from __future__ import annotations

import asyncio
import random
import threading
import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from gateway.registry import RegistryUnavailable
from gateway.registry.pgconn import LICENSES, POLICY, changes
from gateway.registry.postgres import PostgresNonces, PostgresSignals, PostgresStore
from gateway.registry.sqlite import SqliteStore
from gateway.types import Outcome, Status
from tests.engine.test_engine import build_license
from tests.pg import SERVER
from tests.registry.test_store import NOW, _metered


@pytest.fixture
def store(pg_url):
    store = PostgresStore(pg_url)
    yield store
    store.close()


def _rows(url: str, query: str, *params) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


async def _each_in_one_turn(store, groups):
    """One decide_many call per group, all made in the same loop turn; results or exceptions."""
    return await asyncio.gather(*(store.decide_many(group) for group in groups), return_exceptions=True)


def test_the_calls_of_one_loop_turn_are_one_transaction(store, pg_url):
    lic = build_license({"tier": "basic", "seats": 50})
    store.put([lic])
    before = store.transactions
    results = asyncio.run(_each_in_one_turn(store, [[_metered(lic, f"user{i}", 0, feature="view")]
                                                    for i in range(20)]))
    assert all(d.outcome is Outcome.ALLOW and d.claim_seat for [d] in results)
    assert store.transactions - before == 1 and store._batcher.flushes == 1
    # The server's own word: every seat row was written by one transaction.
    assert _rows(pg_url, "SELECT count(*), count(DISTINCT xmin::text) FROM seats") == [(20, 1)]


def test_a_turn_decides_exactly_as_the_checks_one_by_one(store, tmp_path):
    """Random checks on a few licenses (seats and quotas), all in one turn on PostgreSQL, and one
    at a time on SQLite: the same decisions, and the same counters afterwards."""
    rng = random.Random(16)
    licenses = [build_license({"tier": tier, "seats": seats})._replace(license_id=f"lic_{i}", key_hash=f"{i:064}")
                for i, (tier, seats) in enumerate([("strict", 3), ("basic", 2), ("strict", None)])]
    checks = [_metered(rng.choice(licenses), f"u{rng.randrange(6)}", rng.randrange(0, 4),
                       NOW + timedelta(seconds=i), feature=rng.choice(["export", "view", "reports.daily"]))
              for i in range(120)]
    one_by_one = SqliteStore(tmp_path / "r.db")
    one_by_one.put(licenses)
    expected = [asyncio.run(one_by_one.decide_many([c]))[0] for c in checks]
    store.put(licenses)
    got = [d for [d] in asyncio.run(_each_in_one_turn(store, [[c] for c in checks]))]
    assert got == expected
    assert {r.reason for r in got} >= {"VALID", "SEAT_LIMIT_EXCEEDED", "QUOTA_EXCEEDED"}  # the case is rich enough
    assert store.transactions == 1
    for lic in licenses:
        assert store.seats_in_use(lic.license_id, NOW, 30) == one_by_one.seats_in_use(lic.license_id, NOW, 30)
    counters = one_by_one._db.execute("SELECT license_id, quota_key, period_start_us, used FROM usage").fetchall()
    assert sorted(counters) == sorted(_rows(store.url, "SELECT license_id, quota_key, period_start_us, used FROM usage"))
    one_by_one.close()


def test_a_failing_call_fails_alone_and_leaves_nothing(store, pg_url):
    lic = build_license({"tier": "strict"})
    store.put([lic])

    def broken(usage):
        raise RuntimeError("a bug in the decision")

    first, failed, last = asyncio.run(_each_in_one_turn(store, [
        [_metered(lic, "u1", 3)],
        [_metered(lic, "u2", 4), _metered(lic, "u2", 1)._replace(decide=broken)],  # its first check is undone too
        [_metered(lic, "u3", 3)]]))
    assert isinstance(failed, RuntimeError)
    assert [first[0].quota_used, last[0].quota_used] == [3, 6]  # the third saw the first, not the failed one
    assert _rows(pg_url, "SELECT sum(used) FROM usage") == [(6,)]
    assert sorted(u for (u,) in _rows(pg_url, "SELECT user_id FROM seats")) == ["u1", "u3"]


def test_a_recent_seat_holder_is_decided_without_the_database(store):
    lic = build_license({"tier": "basic"})
    store.put([lic])
    [[first]] = asyncio.run(_each_in_one_turn(store, [[_metered(lic, "u1", 0, feature="view")]]))
    assert first.claim_seat and store.transactions == 1
    later = NOW + timedelta(minutes=30)
    [[again]] = asyncio.run(_each_in_one_turn(store, [[_metered(lic, "u1", 0, later, feature="view")]]))
    assert again.outcome is Outcome.ALLOW and not again.claim_seat and store.transactions == 1
    much_later = NOW + timedelta(hours=2)  # past the hour: its last use is written again
    asyncio.run(_each_in_one_turn(store, [[_metered(lic, "u1", 0, much_later, feature="view")]]))
    assert store.transactions == 2


def test_every_change_of_licenses_and_generations_is_announced(store, pg_url):
    async def scenario():
        received: list[str] = []

        async def listen():
            async for what in changes(pg_url):
                received.append(what)

        listener = asyncio.create_task(listen())
        await asyncio.sleep(0.3)  # listening
        lic = build_license({})
        await asyncio.to_thread(store.put, [lic])
        await asyncio.to_thread(store.put, [lic])  # unchanged: nothing to announce
        await asyncio.to_thread(store.set_status, lic.license_id, Status.SUSPENDED)
        signals = PostgresSignals(pg_url)
        await asyncio.to_thread(signals.bump, POLICY)
        signals.close()
        deadline = time.monotonic() + 5
        while len(received) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        listener.cancel()
        return received

    assert asyncio.run(scenario()) == [LICENSES, LICENSES, POLICY]


def _terminate_all(conn: psycopg.Connection, dbname: str) -> int:
    """Kill every backend the stores opened on ``dbname`` (as a crash or a failover would)."""
    return len(conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = %s AND application_name = 'portcullis' AND pid <> pg_backend_pid()",
                            (dbname,)).fetchall())


def _terminate(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return _terminate_all(conn, psycopg.conninfo.conninfo_to_dict(url)["dbname"])


def test_a_connection_killed_mid_load_never_counts_a_unit_twice_nor_grants_one_not_taken(store, pg_url):
    lic = build_license({"tier": "strict", "quotas": {"export": {"limit": 1_000_000, "period": "day"}}})
    store.put([lic])
    stop = threading.Event()

    def killer():
        while not stop.is_set():
            _terminate(pg_url)
            time.sleep(random.uniform(0.001, 0.02))

    async def load():
        granted = unknown = failures = 0
        for _ in range(150):
            quantities = [random.randint(1, 9) for _ in range(8)]
            results = await _each_in_one_turn(store, [[_metered(lic, "u1", q)] for q in quantities])
            for q, result in zip(quantities, results):
                if isinstance(result, RegistryUnavailable):
                    failures += 1
                    unknown += q  # its transaction may or may not have committed
                else:
                    assert result[0].outcome is not Outcome.DENY, result
                    granted += result[0].consume
        return granted, unknown, failures

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        granted, unknown, failures = asyncio.run(load())
    finally:
        stop.set()
        thread.join()
    used = _rows(pg_url, "SELECT coalesce(sum(used), 0) FROM usage")[0][0]
    assert failures > 0, "the killer never hit a transaction: the test proved nothing"
    assert granted <= used <= granted + unknown  # every grant counted once; a failure at most once
    # Recovery by itself: the next turn is served again.
    [[after]] = asyncio.run(_each_in_one_turn(store, [[_metered(lic, "u1", 1)]]))
    assert after.outcome is not Outcome.DENY
    assert _rows(pg_url, "SELECT coalesce(sum(used), 0) FROM usage")[0][0] == used + 1


def test_the_sync_methods_raise_then_reconnect_after_a_kill(store, pg_url):
    lic = build_license({})
    store.put([lic])
    assert _terminate(pg_url) >= 1
    with pytest.raises(RegistryUnavailable, match="cannot be reached"):
        store.get(lic.license_id)
    assert store.get(lic.license_id) == lic  # a fresh connection


def test_while_the_database_refuses_connections_decisions_are_unavailable_then_served_again(store, pg_url):
    lic = build_license({"tier": "strict"})
    store.put([lic])
    dbname = psycopg.conninfo.conninfo_to_dict(pg_url)["dbname"]
    with psycopg.connect(SERVER, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{dbname}" WITH ALLOW_CONNECTIONS false')
        try:
            _terminate_all(admin, dbname)
            with pytest.raises(RegistryUnavailable, match=f"{dbname} cannot be reached: .*not currently accepting"):
                asyncio.run(store.decide_many([_metered(lic, "u1", 1)]))
            with pytest.raises(RegistryUnavailable):
                store.get(lic.license_id)
        finally:
            admin.execute(f'ALTER DATABASE "{dbname}" WITH ALLOW_CONNECTIONS true')
    [decision] = asyncio.run(store.decide_many([_metered(lic, "u1", 1)]))
    assert decision.outcome is Outcome.ALLOW and store.get(lic.license_id) == lic


def test_nonces_are_shared_by_every_host_and_one_turn_is_one_statement(pg_url):
    hosts = [PostgresNonces(pg_url, window_s=300) for _ in range(2)]

    async def scenario():
        first = await asyncio.gather(*(hosts[0].record(n, 1000.0) for n in ["a", "b", "a", "c"]))
        elsewhere = await asyncio.gather(hosts[1].record("b", 1001.0), hosts[1].record("d", 1001.0))
        later = await hosts[1].record("a", 1602.0)  # expired at 1000 + 2 × 300 + 1: taken afresh
        return first, elsewhere, later

    first, elsewhere, later = asyncio.run(scenario())
    assert first == [True, True, False, True]  # the same nonce twice in one turn: a replay
    assert elsewhere == [False, True]  # a replay to another host is refused
    assert later is True
    assert hosts[0]._batcher.flushes == 1
    hosts[0].absorb([("from-a-journal", 2000), ("from-a-journal", 2500)])
    assert ("from-a-journal", 2501) in set(hosts[1].unexpired(1700.0))
    assert not asyncio.run(hosts[1].record("from-a-journal", 1700.0))
    for host in hosts:
        host.close()


def test_signals_add_up_over_hosts(pg_url):
    hosts = [PostgresSignals(pg_url) for _ in range(2)]
    assert hosts[0].generation(POLICY) == 0
    assert [hosts[0].bump(POLICY), hosts[1].bump(POLICY)] == [1, 2] and hosts[1].generation(POLICY) == 2
    assert hosts[0].tally(7, {"addr:10.0.0.9": 2, "addr:10.0.0.8": 1}) == {"addr:10.0.0.9": 2, "addr:10.0.0.8": 1}
    assert hosts[1].tally(7, {"addr:10.0.0.9": 3}) == {"addr:10.0.0.9": 5}
    hosts[1].tally(10, {"addr:10.0.0.9": 1})  # windows older than two before this one are dropped
    assert _rows(pg_url, "SELECT DISTINCT window_no FROM tallies") == [(10,)]
    assert hosts[0].claim(["n1", "n2", "n1"]) == ["n1", "n2"]
    assert hosts[1].claim(["n2", "n3"]) == ["n3"]
    for host in hosts:
        host.close()


def test_policy_impact_reads_the_licenses_of_the_shared_registry(store, pg_url):
    from analytics.impact import ImpactError, registry_licenses
    lic = build_license({"tier": "strict"})
    store.put([lic])
    found = registry_licenses(Path("/nonexistent/portcullis.db"), pg_url)
    assert found.by_id == {lic.license_id: lic} and found.source.startswith("registry postgresql://127.0.0.1")
    with pytest.raises(ImpactError, match="cannot be reached"):
        registry_licenses(Path("/nonexistent/portcullis.db"), "postgresql://postgres@127.0.0.1:1/gone")
