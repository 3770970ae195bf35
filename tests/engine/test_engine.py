"""Golden cases for the pure engine: each case in cases.toml is input -> expected decision."""
from __future__ import annotations

import tomllib
from datetime import datetime
from pathlib import Path

import pytest

from gateway.engine import decide, degraded, glob_match, metering, period_bounds
from gateway.policy import load_policy, parse_quotas
from gateway.types import Check, Decision, License, Outcome, Period, Reason, Status, Usage

HERE = Path(__file__).parent
POLICY = load_policy(HERE / "policy.toml")
CASES = tomllib.loads((HERE / "cases.toml").read_text())["case"]
NOW = "2026-06-15T12:00:00Z"


def _time(text: str | None) -> datetime | None:
    return None if text in (None, "none") else datetime.fromisoformat(text.replace("Z", "+00:00"))


def build_license(spec: dict | str | None) -> License | None:
    if spec == "none":
        return None
    spec = dict(spec or {})
    return License(
        license_id="lic_TEST", key_hash="0" * 64, customer="acme", product="suite",
        tier=spec.get("tier", "basic"), status=Status(spec.get("status", "active")),
        features=tuple(spec.get("features", ())), seats=spec.get("seats"),
        quotas=parse_quotas("case", spec.get("quotas", {})),
        starts_at=_time(spec.get("starts_at")), expires_at=_time(spec.get("expires_at", "2027-06-01T00:00:00Z")),
        environments=tuple(spec.get("environments", ["*"])),
    )


def run_case(case: dict):
    lic = build_license(case.get("license"))
    check = Check(environment=case.get("environment", "prod"), **case["check"])
    return decide(lic, POLICY, check, Usage(**case.get("usage", {})), _time(case.get("now", NOW)), 30)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_golden_case(case):
    decision = run_case(case)
    expect = dict(case["expect"])
    assert decision.outcome == expect.pop("outcome")
    assert decision.reason == expect.pop("reason")
    if "alerts" in expect:
        assert list(decision.alerts) == expect.pop("alerts")
    for field, value in expect.items():
        assert getattr(decision, field) == (None if value == "none" else value), field


def test_every_engine_reason_code_has_a_case():
    engine_reasons = {r for r in Reason} - {
        Reason.UNAUTHENTICATED, Reason.CALLER_NOT_AUTHORIZED, Reason.RATE_LIMITED,
        Reason.PAYLOAD_TOO_LARGE, Reason.AUDIT_UNAVAILABLE, Reason.INTERNAL_ERROR,
        Reason.REGISTRY_UNAVAILABLE, Reason.REGISTRY_DEGRADED,  # the shared registry's faults, not the license's
    }
    covered = {c["expect"]["reason"] for c in CASES} | {a for c in CASES for a in c["expect"].get("alerts", [])}
    assert engine_reasons <= covered, engine_reasons - covered


def test_denies_never_carry_effects():
    for case in CASES:
        decision = run_case(case)
        if decision.outcome == "deny":
            assert not decision.claim_seat and decision.consume == 0, case["name"]


@pytest.mark.parametrize("pattern,name,expected", [
    ("*", "x", True), ("reports.*", "reports.a", True), ("reports.*", "report", False),
    ("export", "export", True), ("export", "exports", False),
])
def test_glob_match(pattern, name, expected):
    assert glob_match(pattern, name) is expected


def test_period_bounds_roll_over_year():
    start, end = period_bounds(Period.MONTH, _time("2026-12-31T23:59:59Z"))
    assert (start.isoformat(), end.isoformat()) == ("2026-12-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00")
    start, end = period_bounds(Period.DAY, _time("2026-02-28T10:00:00Z"))
    assert (start.day, end.day, end.month) == (28, 1, 3)


def test_metering_names_the_counters_to_lock():
    lic = build_license({"tier": "basic"})
    meter = metering(lic, POLICY, Check(feature="reports.x", environment="prod"), _time(NOW))
    assert (meter.seat_limit, meter.quota_key, meter.quota.limit) == (5, "reports.*", 50)
    assert meter.period_end == _time("2026-06-16T00:00:00Z")
    unmetered = metering(build_license({"tier": "unlimited"}), POLICY, Check(feature="x", environment="p"), _time(NOW))
    assert unmetered.seat_limit is None and unmetered.quota is None


def test_a_degraded_decision_grants_with_its_alert_and_is_never_cached():
    """The "cached" mode's rule (SPEC §11): what the host's copy allows it allows with the alert
    REGISTRY_DEGRADED and a cache TTL of 0; an alert keeps its reason and gains the alert; a deny
    stays as it was."""
    allowed = Decision(Outcome.ALLOW, Reason.VALID, "license is valid", cache_ttl_s=30)
    assert degraded(allowed)[:4] == (Outcome.ALERT, Reason.REGISTRY_DEGRADED, degraded(allowed).detail,
                                     (Reason.REGISTRY_DEGRADED,))
    assert degraded(allowed).cache_ttl_s == 0
    alerted = Decision(Outcome.ALERT, Reason.EXPIRING_SOON, "soon", (Reason.EXPIRING_SOON,), cache_ttl_s=30)
    assert degraded(alerted)[:4] == (Outcome.ALERT, Reason.EXPIRING_SOON, "soon",
                                     (Reason.EXPIRING_SOON, Reason.REGISTRY_DEGRADED))
    denied = Decision(Outcome.DENY, Reason.LICENSE_REVOKED, "revoked")
    assert degraded(denied) is denied
