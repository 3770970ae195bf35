"""The embedded Enforcer: the gateway's decisions in-process, every one of them audited."""
from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pyarrow.parquet as pq
import pytest

from gateway.engine import metering
from gateway.enforcer import Enforcer
from gateway.licenses import key_hash, new_license_id, new_license_key
from gateway.registry import Metered
from gateway.registry.sqlite import SqliteStore
from gateway.types import Check, Decision, License, Outcome, Reason, Status, Usage
from tests.client.conftest import memory_sinks
from tests.conftest import wait_until
from tests.engine.test_engine import CASES, NOW, POLICY, _time, build_license


def days(n: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(days=n)


@pytest.fixture
def embedded(data_dir):
    made, factory = memory_sinks()
    with Enforcer.from_data_dir(data_dir.path, environment="prod", sink_factory=factory) as enforcer:
        yield enforcer, made[0]


def test_decisions_are_audited_as_the_embedded_caller(data_dir, embedded):
    enforcer, sink = embedded
    valid = data_dir.issue(tier="basic", expires_at=days(200))
    expiring = data_dir.issue(tier="basic", expires_at=days(10))
    enforcer.refresh()
    allow = enforcer.check(license_key=valid.key, feature="view", user_id="u1", request_id="r-1")
    deny = enforcer.check(license_key=valid.key, feature="admin", user_id="u1")
    alert = enforcer.check(license_key=expiring.key, feature="view", user_id="u1")
    assert (allow.decision, allow.reason, allow.seats.used, allow.request_id) == ("allow", "VALID", 1, "r-1")
    assert (deny.decision, deny.reason, deny.allowed) == ("deny", "FEATURE_NOT_ENTITLED", False)
    assert (alert.reason, alert.allowed, alert.alerts) == ("EXPIRING_SOON", True, ("EXPIRING_SOON",))
    assert [r.decision_id for r in sink.records] == [allow.decision_id, deny.decision_id, alert.decision_id]
    record = sink.records[0]
    assert (record.caller_id, record.auth_method, record.endpoint) == ("embedded", "none", "embedded.check")
    assert (record.environment, record.license_id) == ("prod", valid.license.license_id)
    assert record.key_fp and valid.key not in repr(sink.records)
    assert record.instance == enforcer.instance and "embedded" in enforcer.instance


def test_the_default_trail_is_durable_parquet(data_dir):
    issued = data_dir.issue(tier="basic", expires_at=days(200))
    with Enforcer.from_data_dir(data_dir.path, environment="prod") as enforcer:
        decisions = [enforcer.check(license_key=issued.key, feature=f, user_id="u1") for f in ("view", "admin")]
        with pytest.raises(RuntimeError, match="another process"):  # one writer per instance name
            Enforcer.from_data_dir(data_dir.path, environment="prod")
    files = sorted(data_dir.settings.audit_dir.glob("date=*/hour=*/*.parquet"))
    rows = pq.ParquetFile(files[0]).read().to_pylist() if len(files) == 1 else []
    assert [(r["decision_id"], r["reason"]) for r in rows] == [(d.decision_id, d.reason) for d in decisions]
    assert {(r["caller_id"], r["endpoint"], r["instance"]) for r in rows} == {
        ("embedded", "embedded.check", enforcer.instance)}
    assert files[0].name.startswith(enforcer.instance)


def test_a_malformed_check_is_refused_and_audited(embedded):
    enforcer, sink = embedded
    refused = enforcer.check(license_key="LK-A", feature="no spaces allowed")
    assert (refused.decision, refused.reason, refused.http_status) == ("deny", "INVALID_REQUEST", 400)
    assert sink.records[-1].reason == "INVALID_REQUEST" and sink.records[-1].http_status == 400


async def test_registry_changes_made_elsewhere_are_seen(data_dir, embedded):
    enforcer, _ = embedded
    issued = data_dir.issue(tier="basic", expires_at=days(200))
    enforcer.refresh()
    assert enforcer.check(license_key=issued.key, feature="view", user_id="u1").allowed
    store = SqliteStore(data_dir.settings.db_path)
    try:
        store.set_status(issued.license.license_id, Status.REVOKED)
    finally:
        store.close()

    async def revoked() -> bool:  # the Enforcer's own periodic refresh must find it
        decision = await enforcer.acheck(license_key=issued.key, feature="view", user_id="u1")
        return decision.reason == "LICENSE_REVOKED"
    await wait_until(revoked, what="the revocation to reach the Enforcer")


async def test_async_callers_await_without_blocking(data_dir):
    issued = data_dir.issue(tier="strict", expires_at=days(200))
    async with Enforcer.from_data_dir(data_dir.path, environment="prod") as enforcer:
        decisions = await asyncio.gather(*[
            enforcer.acheck(license_key=issued.key, feature="export", user_id="u1", quantity=3) for _ in range(4)])
    # Decided one at a time against the 10/day quota (10 % overage): the fourth would make 12.
    assert sorted((d.quota.used, d.reason) for d in decisions) == [
        (3, "VALID"), (6, "VALID"), (9, "QUOTA_EXCEEDED"), (9, "QUOTA_NEAR_LIMIT")]
    assert {d.cache_ttl_s for d in decisions} == {0}


def test_import_gateway_stays_cheap_and_exports_the_enforcer_lazily():
    code = ("import sys, gateway; before = sorted(m for m in sys.modules if m.startswith('gateway.')); "
            "gateway.Enforcer; print(before, 'gateway.port' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] True"


# -- the golden engine cases, through the gateway and through the Enforcer --------------------------

class Clock:
    """The moment both paths decide at: each golden case sets its own ``now``."""

    def __init__(self) -> None:
        self.now = _time(NOW)

    def __call__(self) -> datetime:
        return self.now


async def seed(store: SqliteStore, lic: License, check: Check, usage: Usage, now: datetime) -> None:
    """Give ``lic`` the case's usage through the store's own check-and-consume transaction."""
    meter = metering(lic, POLICY, check, now)
    holders = [check.user_id] if usage.holds_seat else []
    holders += [f"seed-{i}" for i in range(usage.seats_used - len(holders))]
    effects = [(user, 0) for user in holders] + [(None, usage.quota_used)]
    for user, consume in effects:
        seeded = Decision(Outcome.ALLOW, Reason.VALID, "seeded", consume=consume)
        await store.decide_many([Metered(lic, meter, user, now, lambda _usage, seeded=seeded: seeded)])


async def stage(store: SqliteStore, case: dict, now: datetime) -> str:
    """A license in the case's state, under a fresh key; returns the key."""
    key = new_license_key()
    if case.get("license") == "none":
        return key
    lic = build_license(case.get("license"))._replace(license_id=new_license_id(), key_hash=key_hash(key))
    store.put([lic])
    check = Check(environment=case.get("environment", "prod"), **case["check"])
    await seed(store, lic, check, Usage(**case.get("usage", {})), now)
    return key


def facts(decision) -> tuple:
    days_left = decision.license.days_left if decision.license else None
    return (decision.decision, decision.reason, decision.alerts, decision.seats, decision.quota, days_left,
            decision.cache_ttl_s, decision.http_status)


async def test_golden_cases_decide_alike_in_process_and_over_http(start_gateway):
    clock = Clock()
    live = await start_gateway(clock=clock)
    _, factory = memory_sinks()
    store = SqliteStore(live.data.settings.db_path)
    with Enforcer.from_data_dir(live.data.path, environment="prod", sink_factory=factory, clock=clock) as enforcer:
        async with live.client(cache_size=0) as port:
            for case in CASES:
                clock.now = now = _time(case.get("now", NOW))
                over_http, in_process = await stage(store, case, now), await stage(store, case, now)
                live.port.refresh()
                enforcer.refresh()
                asked = dict(case["check"], environment=case.get("environment", "prod"))
                remote = await port.check(license_key=over_http, **asked)
                local = await enforcer.acheck(license_key=in_process, **asked)
                assert facts(local) == facts(remote), case["name"]
                assert (local.decision, local.reason) == (case["expect"]["outcome"], case["expect"]["reason"])
    store.close()
    assert len(live.records) == len(CASES)
