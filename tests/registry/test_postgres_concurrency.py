"""Several gateway processes ("hosts") hammering one license in one PostgreSQL registry never
grant more seats or quota than it allows: check-and-consume is atomic across processes."""
from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path

import psycopg
import pytest

from gateway.engine import decide, metering
from gateway.licenses import to_us
from gateway.policy import load_policy
from gateway.registry import Metered
from gateway.registry.postgres import PostgresStore
from gateway.types import Check, Outcome
from tests.conftest import TEST_POLICY
from tests.engine.test_engine import build_license
from tests.registry.test_store import NOW

HOSTS = 3
SEATS = {"tier": "unlimited", "seats": 5}
QUOTA = {"tier": "unlimited", "quotas": {"export": {"limit": 1000, "period": "day"}}}


@pytest.fixture
def exact_policy(tmp_path) -> Path:
    """The test policy without tolerated overage: the limits are the limits."""
    path = tmp_path / "policy.toml"
    path.write_text(TEST_POLICY.read_text().replace("seat_overage_pct = 20", "seat_overage_pct = 0")
                    .replace("quota_overage_pct = 10", "quota_overage_pct = 0"))
    return path


def _host(url: str, policy_path: str, spec: dict, feature: str, quantity: int, users: list[str], rounds: int,
          start, results) -> None:
    """One host: each round, every user's check as its own decide_many call in one loop turn."""
    policy, lic = load_policy(Path(policy_path)), build_license(spec)
    store = PostgresStore(url)

    def metered(user: str) -> Metered:
        check = Check(feature=feature, environment="prod", user_id=user, quantity=quantity)
        meter = metering(lic, policy, check, NOW)
        return Metered(lic, meter, user, NOW, lambda usage: decide(lic, policy, check, usage, NOW, 30, meter))

    async def hammer() -> list[tuple[str, int]]:
        granted = []
        for _ in range(rounds):
            decisions = await asyncio.gather(*(store.decide_many([metered(user)]) for user in users))
            granted += [(user, d.consume) for user, [d] in zip(users, decisions) if d.outcome is not Outcome.DENY]
        return granted

    start.wait()
    granted = asyncio.run(hammer())
    results.put((granted, store.transactions))
    store.close()


def _hosts(url: str, policy: Path, spec: dict, feature: str, quantity: int, users: list[str], rounds: int):
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(HOSTS), ctx.Queue()
    processes = [ctx.Process(target=_host, args=(url, str(policy), spec, feature, quantity, users[i::HOSTS], rounds,
                                                 start, results)) for i in range(HOSTS)]
    for p in processes:
        p.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for p in processes:
        p.join(timeout=30)
        assert p.exitcode == 0
    return [g for granted, _ in outcomes for g in granted], sum(t for _, t in outcomes)


def _setup(url: str, spec: dict) -> PostgresStore:
    store = PostgresStore(url)
    store.put([build_license(spec)])
    return store


def test_five_seats_hammered_by_fifty_users_from_three_hosts_grant_exactly_five(pg_url, exact_policy):
    store = _setup(pg_url, SEATS)
    granted, transactions = _hosts(pg_url, exact_policy, SEATS, "view", 0, [f"user{i:02}" for i in range(50)], 4)
    holders = {user for user, _ in granted}
    assert len(holders) == 5
    assert store.seats_in_use("lic_TEST", NOW, 30) == 5
    assert transactions < 50 * 4  # grouped: far fewer transactions than checks
    store.close()


def test_a_quota_of_1000_consumed_from_three_hosts_is_never_exceeded_nor_miscounted(pg_url, exact_policy):
    store = _setup(pg_url, QUOTA)
    granted, _ = _hosts(pg_url, exact_policy, QUOTA, "export", 7, [f"user{i:02}" for i in range(30)], 8)
    consumed = sum(units for _, units in granted)
    assert consumed == 1000 // 7 * 7  # 3 × 8 × 10 checks of 7 want 1,680: as many as fit, not one more
    lic = build_license(QUOTA)
    period = metering(lic, load_policy(exact_policy), Check(feature="export", environment="prod", quantity=7), NOW)
    with psycopg.connect(pg_url) as conn:
        used = conn.execute("SELECT used FROM usage WHERE license_id = %s AND period_start_us = %s",
                            (lic.license_id, to_us(period.period_start))).fetchone()[0]
    assert used == consumed  # every granted unit counted, once
    store.close()
