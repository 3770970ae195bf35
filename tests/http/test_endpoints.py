"""License reads, admin actions, health probes and the OpenAPI document."""
from __future__ import annotations

from gateway.http.openapi import DOCUMENT
from gateway.http.routes import ROUTES


async def test_get_license_never_shows_the_key(gateway):
    issued = gateway.issue(tier="basic")
    status, body = await gateway.get(f"/v1/licenses/{issued.license.license_id}")
    assert status == 200 and body["license_state"]["tier"] == "basic"
    assert issued.key not in str(body) and issued.license.key_hash not in str(body)
    status, body = await gateway.get("/v1/licenses/lic_nothing")
    assert (status, body["reason"]) == (404, "KEY_NOT_FOUND")
    assert [r.endpoint for r in gateway.records] == ["license.get", "license.get"]


async def test_health_and_readiness_are_not_audited(gateway):
    assert (await gateway.client.get("/healthz")).status == 200
    response = await gateway.client.get("/readyz")
    body = await response.json()
    assert response.status == 200 and body["checks"] == {"registry": True, "policy": True, "audit": True}
    assert (await gateway.client.get("/openapi.json")).status == 200
    assert gateway.records == []


async def test_policy_reload_good_and_broken(gateway):
    issued = gateway.issue(tier="unlimited")
    policy_path = gateway.data.settings.policy_path
    old_version = gateway.port.policy.version
    policy_path.write_text(policy_path.read_text().replace("grace_days = 7", "grace_days = 9"))
    status, body = await gateway.post("/v1/admin/policy/reload", {}, creds=gateway.data.admin)
    new_version = gateway.port.policy.version
    assert status == 200 and new_version != old_version and new_version in body["detail"]
    policy_path.write_text("[tiers.broken]\nfeatures = 3\n")
    status, body = await gateway.post("/v1/admin/policy/reload", {}, creds=gateway.data.admin)
    assert (status, body["reason"]) == (400, "INVALID_REQUEST")
    assert "tier 'broken'" in body["detail"] and "features" in body["detail"]
    assert gateway.port.policy.version == new_version
    _, body = await gateway.check(license_key=issued.key, feature="x")
    assert body["policy_version"] == new_version
    assert [r.endpoint for r in gateway.records][:2] == ["admin.policy_reload"] * 2


async def test_openapi_documents_exactly_the_routes(gateway):
    response = await gateway.client.get("/openapi.json")
    served = await response.json()
    assert served == DOCUMENT
    documented = {(method.upper(), path) for path, ops in served["paths"].items() for method in ops}
    routed = set()
    for route in ROUTES:
        path = route.path.replace("{action:revoke|suspend|resume}", "{action}")
        for action in ("revoke", "suspend", "resume") if "{action}" in path else (None,):
            routed.add((route.method, path.replace("{action}", action) if action else path))
    assert documented == routed


async def test_openapi_schema_accepts_a_real_answer(gateway):
    issued = gateway.issue(tier="basic")
    _, body = await gateway.check(license_key=issued.key, feature="view", user_id="u1")
    schema = DOCUMENT["components"]["schemas"]["Decision"]
    assert set(schema["required"]) <= set(body)
    assert set(body) <= set(schema["properties"])
    assert body["reason"] in schema["properties"]["reason"]["enum"]
