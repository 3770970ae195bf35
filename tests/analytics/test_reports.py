"""Each report over the planted data directory finds exactly the planted cases."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from analytics.db import connect
from analytics.registry import REPORTS, run_report

from .conftest import GONE_FP, LATENCIES, LICENSES, NOW, PROBE_FPS


@pytest.fixture
def con(planted: Path):
    connection = connect(planted)
    yield connection
    connection.close()


def rows(con, name, **params):
    return run_report(con, name, now=NOW, **params).to_pylist()


def test_expiring_finds_licenses_expiring_within_the_window_not_revoked(con):
    found = rows(con, "expiring")
    assert [r["license_id"] for r in found] == ["lic_soon", "lic_suspended_soon"]
    soon = found[0]
    assert soon["days_left"] == 5
    assert soon["calls_7d"] == 2 and soon["active_users_7d"] == 2
    assert soon["last_seen"] == NOW - timedelta(days=1)
    assert found[1]["last_seen"] == NOW - timedelta(days=5)
    assert found[1]["active_users_7d"] == 0  # only denials


def test_expiring_window_is_a_parameter(con):
    assert {r["license_id"] for r in rows(con, "expiring", days=364)} == {
        "lic_soon", "lic_suspended_soon", "lic_later", "lic_seats"}  # lic_revoked never


def test_stale_keys_finds_stale_never_used_and_zombie_keys(con):
    found = {(r["kind"], r["key_fp"]): r for r in rows(con, "stale-keys")}
    assert set(found) == {
        ("stale", LICENSES["stale"]["key_fp"]),
        ("never_used", LICENSES["never"]["key_fp"]),
        ("revoked", LICENSES["revoked"]["key_fp"]),
        ("expired", LICENSES["expired"]["key_fp"]),
        ("unknown", GONE_FP),
    }
    assert found[("stale", LICENSES["stale"]["key_fp"])]["last_seen"] == NOW - timedelta(days=60)
    assert found[("never_used", LICENSES["never"]["key_fp"])]["last_seen"] is None
    revoked = found[("revoked", LICENSES["revoked"]["key_fp"])]
    assert (revoked["presented"], revoked["callers"], revoked["status"]) == (4, ["legacy"], "revoked")
    expired = found[("expired", LICENSES["expired"]["key_fp"])]
    assert (expired["presented"], expired["callers"]) == (2, ["batch"])
    unknown = found[("unknown", GONE_FP)]
    assert (unknown["presented"], unknown["callers"], unknown["license_id"]) == (5, ["legacy"], None)


def test_stale_keys_thresholds_are_parameters(con):
    kinds = {r["key_fp"]: r["kind"] for r in rows(con, "stale-keys", days=90, min_calls=1)}
    assert LICENSES["stale"]["key_fp"] not in kinds  # used 60 days ago: not stale over 90 days
    assert kinds[LICENSES["never"]["key_fp"]] == "never_used"  # issued 100 days ago, never used
    assert set(PROBE_FPS) <= set(kinds)  # one-off probes count once min_calls is 1


def test_unauthorized_groups_refusals_and_flags_key_probing(con):
    found = {(r["kind"], r["caller_id"], r["remote_addr"], r["auth_error"]): r for r in rows(con, "unauthorized")}
    assert set(found) == {
        ("refused", None, "203.0.113.7", "bad_signature"),
        ("refused", None, "198.51.100.1", "missing_credentials"),
        ("refused", "web", "10.0.0.1", None),
        ("key_probing", "scanner", "10.6.6.6", None),
    }
    assert found[("refused", None, "203.0.113.7", "bad_signature")]["calls"] == 3  # not the one 3 days ago
    assert found[("refused", None, "198.51.100.1", "missing_credentials")]["calls"] == 2
    assert found[("refused", "web", "10.0.0.1", None)]["http_status"] == 403
    probing = found[("key_probing", "scanner", "10.6.6.6", None)]
    assert (probing["calls"], probing["distinct_keys"]) == (12, 12)
    assert probing["first_seen"] == NOW - timedelta(hours=2)


def test_unauthorized_window_is_a_parameter(con):
    bad = [r for r in rows(con, "unauthorized", hours=96) if r["auth_error"] == "bad_signature"]
    assert [r["calls"] for r in bad] == [4]


def test_trends_counts_decisions_per_bucket(con):
    found = rows(con, "trends", bucket="day", days=2)
    total = {(r["decision"], r["reason"]): 0 for r in found}
    for r in found:
        total[(r["decision"], r["reason"])] += r["calls"]
        assert r["bucket"].hour == 0 and r["bucket"].minute == 0
    assert total[("deny", "LICENSE_REVOKED")] == 4
    assert total[("deny", "UNAUTHENTICATED")] == 5
    assert total[("deny", "KEY_NOT_FOUND")] == 12 + 2  # the probes, and the unknown key 1 and 2 days ago
    assert total[("allow", "VALID")] == 100 + 3  # latency hour; lic_soon, lic_later, lic_seats


def test_trends_hourly_buckets(con):
    found = rows(con, "trends", bucket="hour", days=1)
    assert {r["bucket"] for r in found if r["reason"] == "LICENSE_REVOKED"} == {
        NOW - timedelta(hours=h) for h in (2, 3, 4, 5)}


def test_latency_percentiles_per_bucket(con):
    found = rows(con, "latency", bucket="hour", days=2)
    hour = next(r for r in found if r["bucket"] == NOW - timedelta(hours=30))
    assert hour["calls"] == len(LATENCIES)
    assert hour["p50_us"] == pytest.approx(50.5)
    assert hour["p99_us"] == pytest.approx(99.01)
    assert hour["max_us"] == 100


def test_features_usage_by_feature_and_tier(con):
    found = {(r["feature"], r["tier"]): r for r in rows(con, "features", days=30)}
    api = found[("api.calls", "enterprise")]
    assert (api["calls"], api["allowed"], api["licenses"], api["deny_pct"]) == (100, 100, 1, 0.0)
    # lic_soon x3, lic_revoked x4, lic_expired x2, lic_suspended_soon x1; the future call excluded
    export = found[("export", "pro")]
    assert (export["calls"], export["allowed"], export["alerted"], export["denied"]) == (10, 2, 1, 7)
    assert (export["licenses"], export["deny_pct"]) == (4, 70.0)


def test_seats_reports_the_latest_count_against_the_limit(con):
    found = rows(con, "seats")
    assert [r["license_id"] for r in found] == ["lic_seats"]
    seats = found[0]
    assert (seats["seats_used"], seats["seats_limit"], seats["utilisation_pct"]) == (7, 10, 70.0)
    assert (seats["calls"], seats["seat_denials"], seats["customer"]) == (3, 1, "cust-lic_seats")


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_every_report_runs_on_an_empty_data_directory(empty_data: Path, name: str):
    con = connect(empty_data)
    result = run_report(con, name)
    assert result.num_columns > 0
    assert result.num_rows == (2 if name == "overview" else 0)  # overview always has its two periods
