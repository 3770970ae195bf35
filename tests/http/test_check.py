"""POST /v1/check over a real server: every reason code, the response shape and its audit record."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from gateway.audit import AuditRecord
from gateway.types import Status
from tests.conftest import wait_until

NOW = datetime.now(timezone.utc)


def days(n: float) -> datetime:
    return NOW + timedelta(days=n)


async def test_valid_check_answers_allow_with_the_full_shape(gateway):
    issued = gateway.issue(tier="basic", expires_at=days(200))
    status, body = await gateway.check(license_key=issued.key, feature="view", user_id="u1", request_id="req-1")
    assert status == 200
    assert (body["decision"], body["reason"], body["alerts"]) == ("allow", "VALID", [])
    assert body["request_id"] == "req-1" and body["feature"] == "view"
    assert body["license"]["id"] == issued.license.license_id and body["license"]["days_left"] in (199, 200)
    assert body["seats"] == {"used": 1, "limit": 5}
    assert body["policy_version"] == gateway.port.policy.version and body["cache_ttl_s"] == 30
    [record] = gateway.records
    assert type(record) is AuditRecord
    assert record.decision_id == body["decision_id"] and record.request_id == "req-1"
    assert record.caller_id == "service" and record.auth_method == "hmac" and record.http_status == 200
    assert record.key_fp and len(record.key_fp) == 16 and issued.key not in repr(record)
    assert record.license_id == issued.license.license_id and record.seats_used == 1


@pytest.mark.parametrize("license_fields,check_fields,decision,reason", [
    ({"tier": "basic"}, {"feature": "admin", "user_id": "u1"}, "deny", "FEATURE_NOT_ENTITLED"),
    ({"tier": "basic", "starts_at": days(3)}, {"feature": "view", "user_id": "u1"}, "deny", "NOT_YET_VALID"),
    ({"tier": "basic", "environments": ["staging"]}, {"feature": "view", "user_id": "u1"}, "deny",
     "ENVIRONMENT_NOT_ALLOWED"),
    ({"tier": "basic", "expires_at": days(-30)}, {"feature": "view", "user_id": "u1"}, "deny", "LICENSE_EXPIRED"),
    ({"tier": "basic", "expires_at": days(-2)}, {"feature": "view", "user_id": "u1"}, "alert", "EXPIRED_IN_GRACE"),
    ({"tier": "basic", "expires_at": days(10)}, {"feature": "view", "user_id": "u1"}, "alert", "EXPIRING_SOON"),
    ({"tier": "basic"}, {"feature": "view"}, "deny", "INVALID_REQUEST"),
    ({"tier": "unlimited"}, {"feature": "anything"}, "allow", "VALID"),
])
async def test_license_states(gateway, license_fields, check_fields, decision, reason):
    issued = gateway.issue(**license_fields)
    status, body = await gateway.check(license_key=issued.key, **check_fields)
    assert (body["decision"], body["reason"]) == (decision, reason)
    assert status == (400 if reason == "INVALID_REQUEST" else 200)
    assert gateway.records[-1].reason == reason and gateway.records[-1].http_status == status


async def test_unknown_key(gateway):
    status, body = await gateway.check(license_key="LK-NOPE-NOPE", feature="view")
    assert (status, body["decision"], body["reason"], body["license"]) == (200, "deny", "KEY_NOT_FOUND", None)
    record = gateway.records[-1]
    assert record.license_id is None and record.key_fp and "LK-NOPE" not in repr(record)


@pytest.mark.parametrize("status_value,reason", [(Status.REVOKED, "LICENSE_REVOKED"),
                                                 (Status.SUSPENDED, "LICENSE_SUSPENDED")])
async def test_revoked_and_suspended_via_admin_api(gateway, status_value, reason):
    issued = gateway.issue()
    action = {"revoked": "revoke", "suspended": "suspend"}[status_value.value]
    path = f"/v1/admin/licenses/{issued.license.license_id}/{action}"
    status, body = await gateway.post(path, {}, creds=gateway.data.admin)
    assert status == 200 and body["license_state"]["status"] == status_value.value
    status, body = await gateway.check(license_key=issued.key, feature="view", user_id="u1")
    assert (body["decision"], body["reason"]) == ("deny", reason)
    status, body = await gateway.post(f"/v1/admin/licenses/{issued.license.license_id}/resume", {},
                                      creds=gateway.data.admin)
    assert status == (409 if status_value is Status.REVOKED else 200)  # revocation is final
    status, body = await gateway.check(license_key=issued.key, feature="view", user_id="u1")
    assert body["reason"] == ("LICENSE_REVOKED" if status_value is Status.REVOKED else "VALID")
    assert [r.endpoint for r in gateway.records] == [f"admin.{action}", "check", "admin.resume", "check"]


@pytest.mark.parametrize("action", ["resume", "suspend"])
async def test_a_revoked_license_stays_revoked(gateway, action):
    issued = gateway.issue()
    lid = issued.license.license_id
    assert (await gateway.post(f"/v1/admin/licenses/{lid}/revoke", {}, creds=gateway.data.admin))[0] == 200
    status, body = await gateway.post(f"/v1/admin/licenses/{lid}/{action}", {}, creds=gateway.data.admin)
    assert (status, body["decision"], body["reason"]) == (409, "deny", "INVALID_REQUEST")
    assert body["detail"] == f"license {lid} is revoked, and revocation is final: issue a new license"
    record = gateway.records[-1]
    assert (record.endpoint, record.http_status, record.license_id, record.caller_id) == \
        (f"admin.{action}", 409, lid, "admin")
    assert record.error == body["detail"]
    assert gateway.port.store.get(lid).status is Status.REVOKED
    status, body = await gateway.check(license_key=issued.key, feature="view", user_id="u1")
    assert body["reason"] == "LICENSE_REVOKED"


async def test_seats_over_http(gateway):
    issued = gateway.issue(tier="strict", seats=2)
    answers = [await gateway.check(license_key=issued.key, feature="export", user_id=f"u{i}") for i in range(3)]
    assert [b["reason"] for _, b in answers] == ["VALID", "VALID", "SEAT_LIMIT_EXCEEDED"]
    _, again = await gateway.check(license_key=issued.key, feature="export", user_id="u0")
    assert again["reason"] == "VALID" and again["seats"] == {"used": 2, "limit": 2}


async def test_quota_check_and_consume_over_http(gateway):
    issued = gateway.issue(tier="strict")
    reasons = []
    for _ in range(6):
        _, body = await gateway.check(license_key=issued.key, feature="export", user_id="u1", quantity=2)
        reasons.append(body["reason"])
    # limit 10/day, warn at 80 %, 10 % overage tolerated: 2,4,6 valid; 8,10 near; 12 > 11 refused
    assert reasons == ["VALID", "VALID", "VALID", "QUOTA_NEAR_LIMIT", "QUOTA_NEAR_LIMIT", "QUOTA_EXCEEDED"]
    _, body = await gateway.check(license_key=issued.key, feature="export", user_id="u1", quantity=1)
    assert body["reason"] == "QUOTA_OVERAGE" and body["quota"]["used"] == 11 and body["cache_ttl_s"] == 0
    assert gateway.records[-1].quota_used == 11 and gateway.records[-1].quantity == 1


async def test_concurrent_consumption_never_over_grants(gateway):
    issued = gateway.issue(tier="strict")
    results = await asyncio.gather(*(gateway.check(license_key=issued.key, feature="export", user_id=f"u{i % 2}",
                                                   quantity=1) for i in range(40)))
    granted = [b for _, b in results if b["decision"] != "deny"]
    assert len(granted) == 11  # limit 10 + 10 % tolerated overage
    assert {b["reason"] for _, b in results if b["decision"] == "deny"} == {"QUOTA_EXCEEDED"}


async def test_trace_id_and_request_id_header(gateway):
    issued = gateway.issue(tier="unlimited")
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    status, body = await gateway.post("/v1/check", {"license_key": issued.key, "feature": "x"},
                                      headers={"traceparent": trace, "X-Request-Id": "hdr-7"})
    assert body["request_id"] == "hdr-7"
    assert gateway.records[-1].trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_environment_in_request_overrides_gateway_environment(gateway):
    issued = gateway.issue(tier="unlimited", environments=["staging"])
    _, body = await gateway.check(license_key=issued.key, feature="x")
    assert body["reason"] == "ENVIRONMENT_NOT_ALLOWED"  # the gateway runs in prod
    _, body = await gateway.check(license_key=issued.key, feature="x", environment="staging")
    assert body["reason"] == "VALID"


async def test_registry_changes_from_elsewhere_reach_the_gateway(gateway):
    issued = gateway.issue(tier="unlimited")
    _, body = await gateway.check(license_key=issued.key, feature="x")
    assert body["reason"] == "VALID"
    from gateway.registry.sqlite import SqliteStore
    store = SqliteStore(gateway.data.settings.db_path)  # another process would do the same (CLI)
    store.set_status(issued.license.license_id, Status.REVOKED)
    store.close()

    async def revoked() -> bool:  # the running gateway's own periodic refresh must find it
        return (await gateway.check(license_key=issued.key, feature="x"))[1]["reason"] == "LICENSE_REVOKED"
    await wait_until(revoked, what="the revocation to reach the gateway")
