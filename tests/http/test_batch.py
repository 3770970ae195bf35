"""POST /v1/check/batch: results in request order, one decision id and one audit record each."""
from __future__ import annotations

from gateway.checks import MAX_BATCH


async def test_batch_answers_in_order_with_one_record_each(gateway):
    good = gateway.issue(tier="unlimited")
    revoked = gateway.issue(tier="unlimited")
    gateway.port.store.set_status(revoked.license.license_id, "revoked")
    gateway.port.refresh()
    checks = [
        {"license_key": good.key, "feature": "a", "request_id": "r0"},
        {"license_key": "LK-unknown", "feature": "b"},
        {"license_key": revoked.key, "feature": "c"},
        {"license_key": good.key, "feature": "d", "bogus": 1},
        {"license_key": good.key, "feature": "e"},
    ]
    status, body = await gateway.post("/v1/check/batch", {"checks": checks})
    assert status == 200
    results = body["results"]
    assert [r["reason"] for r in results] == ["VALID", "KEY_NOT_FOUND", "LICENSE_REVOKED", "INVALID_REQUEST", "VALID"]
    assert [r["status"] for r in results] == [200, 200, 200, 400, 200]
    assert results[0]["request_id"] == "r0"
    ids = [r["decision_id"] for r in results]
    assert len(set(ids)) == 5
    assert [r.decision_id for r in gateway.records] == ids
    assert {r.endpoint for r in gateway.records} == {"batch"}
    assert [r.feature for r in gateway.records] == ["a", "b", "c", "d", "e"]


async def test_batch_shape_errors(gateway):
    for doc in ({"checks": []}, {"checks": "x"}, {"checks": [{}] * (MAX_BATCH + 1)}, {"checks": [], "more": 1}, []):
        status, body = await gateway.post("/v1/check/batch", doc)
        assert (status, body["reason"]) == (400, "INVALID_REQUEST")
    assert len(gateway.records) == 5


async def test_unauthenticated_batch_is_one_401(gateway):
    from tests.conftest import Credentials
    status, body = await gateway.post("/v1/check/batch", {"checks": [{"license_key": "k", "feature": "f"}] * 3},
                                      creds=Credentials("pk_x", "y"))
    assert (status, body["reason"]) == (401, "UNAUTHENTICATED")
    assert [r.http_status for r in gateway.records] == [401]


async def test_full_batch_of_metered_checks_never_over_grants(gateway):
    issued = gateway.issue(tier="strict")
    checks = [{"license_key": issued.key, "feature": "export", "user_id": "u1", "quantity": 1}] * MAX_BATCH
    _, body = await gateway.post("/v1/check/batch", {"checks": checks})
    granted = [r for r in body["results"] if r["decision"] != "deny"]
    assert len(granted) == 11 and len(gateway.records) == MAX_BATCH
