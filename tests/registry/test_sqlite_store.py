"""The SQLite store: check-and-consume transactions, batches, and the seat-holder shortcut."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from gateway.engine import decide, metering
from gateway.policy import load_policy
from gateway.registry.sqlite import SqliteStore
from gateway.types import Check
from tests.conftest import TEST_POLICY
from tests.engine.test_engine import build_license

POLICY = load_policy(TEST_POLICY)
NOW = datetime(2026, 6, 15, 12, tzinfo=timezone.utc)


def _consume(store: SqliteStore, lic, user: str, quantity: int = 1, now: datetime = NOW):
    check = Check(feature="export", environment="prod", user_id=user, quantity=quantity)
    meter = metering(lic, POLICY, check, now)
    return store.decide(lic, meter, user, now, lambda usage: decide(lic, POLICY, check, usage, now, 30, meter))


@pytest.fixture
def store(tmp_path):
    store = SqliteStore(tmp_path / "registry.db")
    yield store
    store.close()


def _used(path, lic) -> int:
    other = SqliteStore(path)  # another process's view
    try:
        row = other._db.execute("SELECT coalesce(sum(used), 0) FROM usage WHERE license_id=?",
                                (lic.license_id,)).fetchone()
        return row[0]
    finally:
        other.close()


def test_a_batch_commits_once_and_is_invisible_until_then(store):
    lic = build_license({"tier": "strict"})
    store.put([lic])
    with store.batch():
        decisions = [_consume(store, lic, "u1") for _ in range(4)]
        assert store._db.in_transaction
    assert [d.quota_used for d in decisions] == [1, 2, 3, 4]
    assert _used(store.path, lic) == 4


def test_an_error_escaping_a_batch_rolls_all_of_it_back(store):
    lic = build_license({"tier": "strict"})
    store.put([lic])
    with pytest.raises(RuntimeError):
        with store.batch():
            _consume(store, lic, "u1", 3)
            raise RuntimeError("commit never happens")
    assert _used(store.path, lic) == 0
    assert _consume(store, lic, "u1", 1).quota_used == 1  # the store is usable again, counts exact


def test_an_error_inside_one_decision_keeps_the_rest_of_the_batch(store):
    lic = build_license({"tier": "strict"})
    store.put([lic])
    check = Check(feature="export", environment="prod", user_id="u9", quantity=2)
    meter = metering(lic, POLICY, check, NOW)

    def broken(usage):
        raise RuntimeError("a bug in one decision")

    with store.batch():
        _consume(store, lic, "u1", 2)
        with pytest.raises(RuntimeError):
            store.decide(lic, meter, "u9", NOW, broken)
        _consume(store, lic, "u1", 3)
    assert _used(store.path, lic) == 5


def test_a_recent_seat_holder_decides_without_a_transaction(store):
    lic = build_license({"tier": "basic"})
    store.put([lic])
    check = Check(feature="view", environment="prod", user_id="u1")
    meter = metering(lic, POLICY, check, NOW)
    first = store.decide(lic, meter, "u1", NOW, lambda u: decide(lic, POLICY, check, u, NOW, 30, meter))
    assert first.claim_seat and first.seats_used == 1
    later = NOW + timedelta(minutes=30)
    meter = metering(lic, POLICY, check, later)
    calls = []
    store._db.set_trace_callback(calls.append)
    again = store.decide(lic, meter, "u1", later, lambda u: decide(lic, POLICY, check, u, later, 30, meter))
    store._db.set_trace_callback(None)
    assert again.outcome == "allow" and not again.claim_seat and calls == []
    much_later = NOW + timedelta(hours=2)  # past the hour: the last use is written again
    meter = metering(lic, POLICY, check, much_later)
    store._db.set_trace_callback(calls.append)
    store.decide(lic, meter, "u1", much_later, lambda u: decide(lic, POLICY, check, u, much_later, 30, meter))
    store._db.set_trace_callback(None)
    assert any(sql.startswith("INSERT INTO seats") for sql in calls)
