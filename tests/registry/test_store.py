"""The registry stores, SQLite and PostgreSQL alike where the test applies to both:
check-and-consume transactions, batches, the seat-holder shortcut, and the order in which license
bundles apply."""
from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from gateway.engine import decide, metering
from gateway.licenses import to_us
from gateway.policy import load_policy
from gateway.registry import FinalRevocation, Metered, StaleBundle, Store
from gateway.registry.postgres import PostgresStore
from gateway.registry.sqlite import SqliteStore
from gateway.types import Check, Status
from tests.conftest import TEST_POLICY
from tests.engine.test_engine import build_license

POLICY = load_policy(TEST_POLICY)
NOW = datetime(2026, 6, 15, 12, tzinfo=timezone.utc)


def _metered(lic, user: str, quantity: int = 1, now: datetime = NOW, feature: str = "export") -> Metered:
    check = Check(feature=feature, environment="prod", user_id=user, quantity=quantity)
    meter = metering(lic, POLICY, check, now)
    return Metered(lic, meter, user, now, lambda usage: decide(lic, POLICY, check, usage, now, 30, meter))


def _decide(store: Store, *checks: Metered):
    return asyncio.run(store.decide_many(checks))


def _consume(store: Store, lic, user: str, quantity: int = 1, now: datetime = NOW):
    return _decide(store, _metered(lic, user, quantity, now))[0]


@pytest.fixture
def sqlite_store(tmp_path):
    store = SqliteStore(tmp_path / "registry.db")
    yield store
    store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    store = SqliteStore(tmp_path / "registry.db") if request.param == "sqlite" else \
        PostgresStore(request.getfixturevalue("pg_url"))
    yield store
    store.close()


def _sql(store: Store, query: str, *params) -> list[tuple]:
    """Run ``query`` (``?`` placeholders) on a connection of its own: another process's view."""
    if isinstance(store, SqliteStore):
        other = sqlite3.connect(store.path)
        try:
            with other:
                return other.execute(query, params).fetchall()
        finally:
            other.close()
    with psycopg.connect(store.url, autocommit=True) as conn:
        cursor = conn.execute(query.replace("?", "%s"), params)
        return cursor.fetchall() if cursor.description else []


def _used(store: Store, lic) -> int:
    return _sql(store, "SELECT coalesce(sum(used), 0) FROM usage WHERE license_id=?", lic.license_id)[0][0]


def test_check_and_consume_is_exact_and_visible_to_other_processes(store):
    lic = build_license({"tier": "strict"})
    store.put([lic])
    decisions = [_consume(store, lic, "u1", 3) for _ in range(5)]
    # limit 10 a day with 10 % tolerated: 3, 6, 9 granted, 12 refused (over 11), 12 refused
    assert [d.reason for d in decisions] == ["VALID", "VALID", "QUOTA_NEAR_LIMIT", "QUOTA_EXCEEDED",
                                             "QUOTA_EXCEEDED"]
    assert _used(store, lic) == 9


def test_a_failing_decision_changes_nothing(store):
    lic = build_license({"tier": "strict"})
    store.put([lic])

    def broken(usage):
        raise RuntimeError("a bug in the decision")

    with pytest.raises(RuntimeError):  # the lot is one transaction: the first check's effects go too
        _decide(store, _metered(lic, "u8", 2), _metered(lic, "u9", 2)._replace(decide=broken))
    assert _used(store, lic) == 0
    assert not isinstance(store, SqliteStore) or not store._db.in_transaction
    assert _consume(store, lic, "u9", 2).claim_seat  # the failed one claimed nothing, not even in cache


def _traced(store: SqliteStore, *checks: Metered) -> tuple[list, list[str]]:
    """The decisions of ``checks`` and every SQL statement the SQLite store ran for them."""
    calls: list[str] = []
    store._db.set_trace_callback(calls.append)
    try:
        return _decide(store, *checks), calls
    finally:
        store._db.set_trace_callback(None)


def test_a_batch_is_one_transaction_each_check_seeing_the_ones_before(sqlite_store):
    store = sqlite_store
    lic = build_license({"tier": "strict"})
    store.put([lic])
    decisions, calls = _traced(store, *(_metered(lic, "u1", 3) for _ in range(5)))
    assert [d.reason for d in decisions] == ["VALID", "VALID", "QUOTA_NEAR_LIMIT", "QUOTA_EXCEEDED",
                                             "QUOTA_EXCEEDED"]
    assert calls.count("BEGIN IMMEDIATE") == 1 and calls.count("COMMIT") == 1
    assert _used(store, lic) == 9


def test_checks_that_read_no_usage_open_no_transaction(sqlite_store):
    store = sqlite_store
    lic = build_license({"tier": "unlimited"})
    store.put([lic])
    decisions, calls = _traced(store, _metered(lic, "u1", 0, feature="view"), _metered(lic, None, 0, feature="view"))
    assert [d.outcome for d in decisions] == ["allow", "allow"] and calls == []


def test_a_recent_seat_holder_decides_without_a_transaction(sqlite_store):
    store = sqlite_store
    lic = build_license({"tier": "basic"})
    store.put([lic])
    [first] = _decide(store, _metered(lic, "u1", 0, feature="view"))
    assert first.claim_seat and first.seats_used == 1
    later = NOW + timedelta(minutes=30)
    [again], calls = _traced(store, _metered(lic, "u1", 0, later, feature="view"))
    assert again.outcome == "allow" and not again.claim_seat and calls == []
    much_later = NOW + timedelta(hours=2)  # past the hour: the last use is written again
    _, calls = _traced(store, _metered(lic, "u1", 0, much_later, feature="view"))
    assert any(sql.startswith("INSERT INTO seats") for sql in calls)


def test_bundles_apply_in_the_order_they_were_sealed(store):
    """admit_bundle through the store: newer wins, older is refused, the same state again is a
    no-op, and a refusal changes nothing."""
    first = build_license({"seats": 5})
    assert store.put_sealed(first, 1_000) is True
    assert store.put_sealed(first, 1_000) is False  # the same bundle again: up to date
    newer = first._replace(seats=10)
    assert store.put_sealed(newer, 2_000) is True
    with pytest.raises(StaleBundle, match="not newer") as refused:
        store.put_sealed(first, 1_000)  # the rollback: back to 5 seats
    assert refused.value.license.seats == 10 and store.get(first.license_id).seats == 10
    assert store.put_sealed(first._replace(seats=10), 1_500) is False  # older but identical: nothing to undo
    with pytest.raises(StaleBundle):
        store.put_sealed(newer._replace(seats=3), 0)  # a bundle without a seal time is the oldest possible


def test_a_change_made_here_outdates_bundles_sealed_before_it(store):
    """A change here may not be undone by a bundle sealed before it, even one the gateway has
    never seen; a bundle sealed after it wins, but never over a revocation."""
    lic = build_license({"seats": 5})
    assert store.put_sealed(lic, 1_000) is True
    store.set_status(lic.license_id, Status.SUSPENDED)  # now, long after 1970 + 2 ms
    with pytest.raises(StaleBundle):
        store.put_sealed(lic._replace(seats=10), 2_000)  # genuine, newer than the first, older than the change
    assert store.get(lic.license_id).status is Status.SUSPENDED
    later = to_us(datetime.now(timezone.utc)) + 1_000_000
    assert store.put_sealed(lic._replace(seats=10), later) is True
    assert store.get(lic.license_id).status is Status.ACTIVE


def test_no_bundle_brings_a_revoked_license_back(store):
    lic = build_license({"seats": 5})
    assert store.put_sealed(lic, 1_000) is True
    store.set_status(lic.license_id, Status.REVOKED)
    later = to_us(datetime.now(timezone.utc)) + 1_000_000
    for status in (Status.ACTIVE, Status.SUSPENDED):
        with pytest.raises(FinalRevocation, match="revocation is final") as refused:
            store.put_sealed(lic._replace(seats=10, status=status), later)
        assert refused.value.license.status is Status.REVOKED
    assert store.get(lic.license_id) == lic._replace(status=Status.REVOKED)
    assert store.put_sealed(lic._replace(seats=10, status=Status.REVOKED), later) is True  # still revoked: applies
    assert store.get(lic.license_id).seats == 10


def test_a_revoked_license_takes_no_other_status(store):
    lic = build_license({})
    store.put([lic])
    assert store.set_status(lic.license_id, Status.REVOKED).status is Status.REVOKED
    for status in (Status.ACTIVE, Status.SUSPENDED):
        with pytest.raises(FinalRevocation, match=f"license {lic.license_id} is revoked"):
            store.set_status(lic.license_id, status)
    assert store.set_status(lic.license_id, Status.REVOKED).status is Status.REVOKED  # again: no change
    assert store.get(lic.license_id).status is Status.REVOKED


def test_a_license_stored_before_seal_times_were_kept_dates_from_its_last_change(store):
    lic = build_license({})
    store.put([lic])
    _sql(store, "DELETE FROM dated")  # as a registry written by an earlier version
    store.set_status(lic.license_id, Status.REVOKED)
    _sql(store, "DELETE FROM dated")
    with pytest.raises(StaleBundle):
        store.put_sealed(lic, 0)  # an old bundle without a seal time cannot un-revoke it


def test_seal_stamps_only_move_forward(store):
    lic = build_license({})
    store.put([lic])
    _, first = store.seal_stamp(lic.license_id, to_us(datetime.now(timezone.utc)))
    _, second = store.seal_stamp(lic.license_id, first - 60_000_000)  # the clock stepped back a minute
    assert second == first + 1
    assert store.seal_stamp("lic_NONE", first) is None
