"""The reports behind the dashboard's Customers page and its deny-rate attention items, over real
Parquet planted around a fixed NOW: each finds exactly what was planted."""
from __future__ import annotations

from datetime import timedelta

import pytest

from analytics.db import connect
from analytics.registry import run_report
from gateway.snapshot import write_callers_snapshot, write_licenses_snapshot

from .conftest import DAY, HOUR, NOW, license_row, licensed, record, write_audit

ACME = {"a": license_row("lic_a", expires_at=NOW + 10 * DAY) | {"customer": "acme"},
        "b": license_row("lic_b", expires_at=NOW + 100 * DAY, status="revoked") | {"customer": "acme"}}
GLOBEX = license_row("lic_g", expires_at=None, tier="enterprise") | {"customer": "globex"}


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    root = tmp_path_factory.mktemp("customers") / "data"
    write_licenses_snapshot(root, [*ACME.values(), GLOBEX])
    write_callers_snapshot(root, [])
    a, b = ACME["a"], ACME["b"]
    seats = dict(seats_limit=5, feature="dashboard.view")
    records = [
        licensed(NOW - 3 * HOUR, a, seats_used=3, **seats),
        licensed(NOW - 2 * HOUR, a, seats_used=4, **seats),
        licensed(NOW - 90 * 60 * timedelta(seconds=1), a, caller_id="batch", environment="staging", decision="deny",
                 reason="QUOTA_EXCEEDED", quota_used=10, quota_limit=10),
        licensed(NOW - HOUR, b, decision="deny", reason="LICENSE_REVOKED"),
        licensed(NOW - 30 * DAY, a),  # outside the 7 days
        licensed(NOW - HOUR, GLOBEX),
        licensed(NOW - HOUR, GLOBEX),
    ]
    # caller "prober": 20 allowed the day before, 10 of 20 denied in the last 24 hours (0 % -> 50 %);
    # host gw-b: 20 allowed before, 20 allowed now (no jump)
    for i in range(20):
        records.append(record(NOW - 30 * HOUR + i * timedelta(minutes=1), caller_id="prober"))
        records.append(record(NOW - 10 * HOUR + i * timedelta(minutes=1), caller_id="prober",
                              **({"decision": "deny", "reason": "KEY_NOT_FOUND"} if i % 2 else {})))
        records.append(record(NOW - 30 * HOUR + i * timedelta(minutes=1), caller_id="steady", instance="gw-b-w1"))
        records.append(record(NOW - 10 * HOUR + i * timedelta(minutes=1), caller_id="steady", instance="gw-b-w1"))
    write_audit(root, records)
    connection = connect(root)
    yield connection
    connection.close()


def rows(con, name, **params):
    return run_report(con, name, now=NOW, **params).to_pylist()


def test_customers_lists_every_customer_with_its_licenses_and_decisions(con):
    found = {r["customer"]: r for r in rows(con, "customers")}
    assert set(found) == {"acme", "globex"}
    assert (found["acme"]["licenses"], found["acme"]["active_licenses"]) == (2, 1)
    assert (found["acme"]["decisions"], found["acme"]["denied"]) == (4, 2)
    assert (found["globex"]["decisions"], found["globex"]["denied"]) == (2, 0)


def test_customer_lists_its_licenses_soonest_expiry_first(con):
    found = rows(con, "customer", customer="acme")
    assert [r["license_id"] for r in found] == ["lic_a", "lic_b"]
    a, b = found
    assert (a["status"], a["days_left"], a["seats_used"], a["seats_limit"]) == ("active", 10, 4, 5)
    assert (a["calls"], a["denied"], a["last_seen"]) == (3, 1, NOW - 90 * timedelta(minutes=1))
    assert (b["status"], b["calls"], b["denied"], b["seats_used"]) == ("revoked", 1, 1, None)
    assert rows(con, "customer", customer="nobody") == []


def test_customer_activity_keeps_outcome_reason_caller_environment_and_limits(con):
    found = rows(con, "customer-activity", customer="acme")
    assert sum(r["calls"] for r in found) == 4
    quota = next(r for r in found if r["reason"] == "QUOTA_EXCEEDED")
    assert (quota["caller_id"], quota["environment"], quota["quota_used"], quota["quota_limit"]) == (
        "batch", "staging", 10, 10)
    assert max(r["seats_used"] or 0 for r in found) == 4
    assert {r["bucket"] for r in found} == {NOW - 3 * HOUR, NOW - 2 * HOUR, NOW - 1 * HOUR}


def test_deny_jumps_names_the_callers_and_hosts_whose_deny_rate_rose(con):
    found = rows(con, "deny-jumps", min_calls=10)
    assert [(r["kind"], r["source"]) for r in found] == [("caller", "prober"), ("host", "gw-test")]
    prober = found[0]
    assert (prober["calls"], prober["denied"], prober["deny_pct"], prober["previous_deny_pct"]) == (20, 10, 50.0, 0.0)
    assert rows(con, "deny-jumps", min_calls=21) == []  # 20 decisions before: too few to judge
    # in the last 2 hours caller batch was refused its only call, but it made none before: no jump
    recent = rows(con, "deny-jumps", min_calls=1, hours=2)
    assert [(r["source"], r["previous_deny_pct"], r["deny_pct"]) for r in recent] == [
        ("gw-test", 0.0, 40.0), ("web", 0.0, 25.0)]
