"""GET /metrics: open, not audited, and every family moves with the traffic that feeds it."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from prometheus_client.parser import text_string_to_metric_families

from gateway.http.keys import GATE, METRICS
from gateway.types import Status

from tests.conftest import Credentials


async def scrape(gateway) -> dict[tuple[str, tuple], float]:
    response = await gateway.client.get("/metrics")
    assert response.status == 200 and response.content_type == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


async def test_metrics_are_open_and_not_audited(gateway):
    response = await gateway.client.get("/metrics")
    assert response.status == 200
    assert "portcullis_policy_info" in await response.text()
    assert gateway.records == []


async def test_decisions_latency_and_failures_are_counted(gateway):
    issued = gateway.issue(tier="unlimited")
    await gateway.check(license_key=issued.key, feature="x")
    await gateway.check(license_key=issued.key, feature="x")
    await gateway.check(license_key="LK-AAAAA-AAAAA-AAAAA-AAAAA-AAAAA", feature="x")
    await gateway.post("/v1/check", {"license_key": issued.key, "feature": "x"}, creds=Credentials("pk_no", "x"))
    m = await scrape(gateway)
    assert m[("portcullis_decisions_total", (("decision", "allow"), ("reason", "VALID")))] == 2
    assert m[("portcullis_decisions_total", (("decision", "deny"), ("reason", "KEY_NOT_FOUND")))] == 1
    assert m[("portcullis_decisions_total", (("decision", "deny"), ("reason", "UNAUTHENTICATED")))] == 1
    assert m[("portcullis_auth_failures_total", (("cause", "unknown_key_id"),))] == 1
    assert m[("portcullis_key_not_found_total", (("caller_id", "service"),))] == 1
    assert m[("portcullis_decision_latency_seconds_count", ())] == 4
    assert m[("portcullis_decision_latency_seconds_bucket", (("le", "+Inf"),))] == 4


async def test_licenses_by_status_and_expiring_windows(gateway):
    now = datetime.now(timezone.utc)
    gateway.issue(tier="unlimited", expires_at=now + timedelta(days=3))
    gateway.issue(tier="unlimited", expires_at=now + timedelta(days=20))
    gateway.issue(tier="unlimited", expires_at=now + timedelta(days=200))
    revoked = gateway.issue(tier="unlimited", expires_at=now + timedelta(days=2))
    gateway.port.store.set_status(revoked.license.license_id, Status.REVOKED)
    gateway.port.refresh()
    m = await scrape(gateway)
    assert m[("portcullis_licenses", (("status", "active"),))] == 3
    assert m[("portcullis_licenses", (("status", "revoked"),))] == 1
    assert m[("portcullis_licenses_expiring", (("within_days", "7"),))] == 1
    assert m[("portcullis_licenses_expiring", (("within_days", "30"),))] == 2


async def test_policy_version_and_audit_counters_are_sampled(gateway):
    version = gateway.port.policy.version
    m = await scrape(gateway)
    assert m[("portcullis_policy_info", (("policy_version", version),))] == 1

    class Sink:
        records_written, bytes_written, flush_seconds_total, failures, lost_records, backlog = 10, 900, 0.5, 1, 0, 2
    app = gateway.client.server.app
    app[METRICS].sample(Sink(), app[GATE].lost_records)
    m = await scrape(gateway)
    assert m[("portcullis_audit_records_total", ())] == 10
    assert m[("portcullis_audit_bytes_total", ())] == 900
    assert m[("portcullis_audit_failures_total", ())] == 1
    assert m[("portcullis_audit_backlog_segments", ())] == 2
