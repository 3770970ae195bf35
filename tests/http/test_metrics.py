"""GET /metrics: open, not audited, and every family moves with the traffic that feeds it."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from gateway.audit.schema import AUDIT_SCHEMA
from gateway.audit.segment import SegmentWriter
from gateway.types import Status
from tests.conftest import Credentials, wait_until


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
    m = await gateway.metrics()
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
    m = await gateway.metrics()
    assert m[("portcullis_licenses", (("status", "active"),))] == 3
    assert m[("portcullis_licenses", (("status", "revoked"),))] == 1
    assert m[("portcullis_licenses_expiring", (("within_days", "7"),))] == 1
    assert m[("portcullis_licenses_expiring", (("within_days", "30"),))] == 2


async def test_policy_version_and_the_audit_trails_counters_are_sampled(durable_gateway, tmp_path):
    gateway = await durable_gateway()
    m = await gateway.metrics()
    assert m[("portcullis_policy_info", (("policy_version", gateway.port.policy.version),))] == 1
    issued = gateway.issue(tier="unlimited")
    for _ in range(7):
        assert (await gateway.check(license_key=issued.key, feature="x"))[0] == 200
    status, _ = await gateway.post("/v1/check/batch", {"checks": [{"license_key": issued.key, "feature": "y"}] * 3})
    assert status == 200
    await wait_until(lambda: records_total(gateway, 10), what="10 records counted in /metrics")
    m = await gateway.metrics()
    [segment] = gateway.data.settings.spool_dir.glob("*/*.seg")  # what is on the disk, past its header
    empty = SegmentWriter(tmp_path / "empty.seg", AUDIT_SCHEMA)
    empty.close()
    assert m[("portcullis_audit_bytes_total", ())] == segment.stat().st_size - empty.header_size > 0
    assert m[("portcullis_audit_flush_seconds_total", ())] > 0
    assert m[("portcullis_audit_failures_total", ())] == m[("portcullis_audit_lost_records_total", ())] == 0
    assert m[("portcullis_audit_backlog_segments", ())] == 0


async def records_total(gateway, expected: int) -> bool:
    return (await gateway.metrics())[("portcullis_audit_records_total", ())] == expected
