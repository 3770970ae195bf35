"""Every malformed, unsigned, replayed or oversized request gets a specific deny and an audit record."""
from __future__ import annotations

import json
import time

import pytest

from tests.conftest import Credentials

CHECK = "/v1/check"


async def _raw(gateway, body: bytes, headers: dict, path: str = CHECK):
    response = await gateway.client.post(path, data=body, headers=headers)
    text = await response.text()
    return response.status, json.loads(text), text


@pytest.mark.parametrize("raw,detail", [
    (b"{not json", "not valid JSON"),
    (b"[]", "must be a JSON object"),
    (b'{"feature": "view"}', "missing required field: license_key"),
    (b'{"license_key": "LK-1"}', "missing required field: feature"),
    (b'{"license_key": "LK-1", "feature": "view", "colour": "red"}', "unknown field(s): colour"),
    (b'{"license_key": 5, "feature": "view"}', "license_key must be"),
    (b'{"license_key": "LK-1", "feature": ["view"]}', "feature must be"),
    (b'{"license_key": "LK-1", "feature": "view", "quantity": -1}', "quantity must be"),
    (b'{"license_key": "LK-1", "feature": "view", "quantity": true}', "quantity must be"),
    (b'{"license_key": "LK-1", "feature": "view", "quantity": 1.5}', "quantity must be"),
    (b'{"license_key": "LK-1", "feature": "bad name!"}', "feature must be"),
    (b"\xff\xfe", "not valid JSON"),
])
async def test_malformed_bodies_are_invalid_requests(gateway, raw, detail):
    status, body = await gateway.post(CHECK, raw=raw)
    assert (status, body["decision"], body["reason"]) == (400, "deny", "INVALID_REQUEST")
    assert detail in body["detail"]
    record = gateway.records[-1]
    assert record.http_status == 400 and record.reason == "INVALID_REQUEST" and detail in record.error


async def test_wrong_content_type_is_415(gateway):
    status, body = await gateway.post(CHECK, {"license_key": "x", "feature": "y"}, content_type="text/plain")
    assert (status, body["reason"]) == (415, "INVALID_REQUEST")
    assert gateway.records[-1].http_status == 415


async def test_oversized_body_is_413_and_audited(gateway):
    big = json.dumps({"license_key": "x" * 70_000, "feature": "y"}).encode()
    status, body = await gateway.post(CHECK, raw=big)
    assert (status, body["decision"], body["reason"]) == (413, "deny", "PAYLOAD_TOO_LARGE")
    assert gateway.records[-1].http_status == 413


async def test_oversized_chunked_body_is_413(gateway):
    async def chunks():
        for _ in range(20):
            yield b"x" * 8192

    response = await gateway.client.post(CHECK, data=chunks(), headers={"Content-Type": "application/json"})
    assert response.status == 413 and (await response.json())["reason"] == "PAYLOAD_TOO_LARGE"
    assert gateway.records[-1].http_status == 413


def _tamper(headers: dict, **changes) -> dict:
    return {**headers, **changes}


async def _auth_case(gateway, case: str):
    issued = gateway.issue(tier="unlimited")
    body = json.dumps({"license_key": issued.key, "feature": "x"}).encode()
    good = gateway.data.service.headers("POST", CHECK, body)
    base = {"Content-Type": "application/json"}
    if case == "missing_credentials":
        headers = base
    elif case == "unknown_key_id":
        headers = {**base, **Credentials("pk_unknown", "whatever").headers("POST", CHECK, body)}
    elif case == "bad_signature":
        headers = {**base, **_tamper(good, **{"X-Port-Signature": "0" * 64})}
    elif case == "stale_timestamp":
        headers = {**base, **gateway.data.service.headers("POST", CHECK, body, now=time.time() - 301)}
    elif case == "replayed_nonce":
        status, _, _ = await _raw(gateway, body, {**base, **good})
        assert status == 200
        headers = {**base, **good}
    elif case == "body_changed":
        headers = {**base, **good}
        body = body.replace(b'"x"', b'"y"')
    return await _raw(gateway, body, headers)


@pytest.mark.parametrize("case,auth_error", [
    ("missing_credentials", "missing_credentials"), ("unknown_key_id", "unknown_key_id"),
    ("bad_signature", "bad_signature"), ("stale_timestamp", "stale_timestamp"),
    ("replayed_nonce", "replayed_nonce"), ("body_changed", "bad_signature"),
])
async def test_authentication_failures_are_401_with_one_body(gateway, case, auth_error):
    status, body, _ = await _auth_case(gateway, case)
    assert (status, body["decision"], body["reason"]) == (401, "deny", "UNAUTHENTICATED")
    assert body["detail"] == "the request is not authenticated"
    record = gateway.records[-1]
    assert record.auth_error == auth_error and record.caller_id is None and record.http_status == 401


async def test_401_bodies_are_identical_apart_from_ids(gateway):
    shapes = set()
    for case in ("missing_credentials", "unknown_key_id", "bad_signature", "stale_timestamp"):
        _, body, _ = await _auth_case(gateway, case)
        body.pop("decision_id"), body.pop("request_id")
        shapes.add(json.dumps(body, sort_keys=True))
    assert len(shapes) == 1


async def test_nonce_of_a_failed_request_is_not_burnt(gateway):
    """An attacker who saw a nonce cannot make the real request fail by sending it first unsigned."""
    issued = gateway.issue(tier="unlimited")
    body = json.dumps({"license_key": issued.key, "feature": "x"}).encode()
    good = gateway.data.service.headers("POST", CHECK, body)
    forged = {**good, "X-Port-Signature": "f" * 64, "Content-Type": "application/json"}
    assert (await _raw(gateway, body, forged))[0] == 401
    assert (await _raw(gateway, body, {**good, "Content-Type": "application/json"}))[0] == 200


async def test_caller_scope_is_403(gateway):
    issued = gateway.issue(tier="basic")
    narrow = gateway.data.narrow
    status, body = await gateway.post(CHECK, {"license_key": issued.key, "feature": "view", "user_id": "u"},
                                      creds=narrow)
    assert (status, body["reason"]) == (200, "VALID")
    for fields in ({"feature": "reports.x"}, {"feature": "view", "environment": "staging"},
                   {"feature": "view", "product": "other"}):
        status, body = await gateway.post(CHECK, {"license_key": issued.key, "user_id": "u", **fields},
                                          creds=narrow)
        assert (status, body["decision"], body["reason"]) == (403, "deny", "CALLER_NOT_AUTHORIZED")
        assert gateway.records[-1].caller_id == "narrow" and gateway.records[-1].http_status == 403


async def test_admin_endpoints_need_an_admin_caller(gateway):
    issued = gateway.issue()
    status, body = await gateway.post(f"/v1/admin/licenses/{issued.license.license_id}/revoke", {})
    assert (status, body["reason"]) == (403, "CALLER_NOT_AUTHORIZED")
    status, body = await gateway.post("/v1/admin/licenses/lic_missing/revoke", {}, creds=gateway.data.admin)
    assert (status, body["reason"]) == (404, "KEY_NOT_FOUND")
    assert [r.http_status for r in gateway.records] == [403, 404]


async def test_caller_rate_limit_is_429(aiohttp_client, tmp_path, stopped_clock):
    from gateway.audit import MemorySink
    from gateway.callers import Caller, add_caller
    from gateway.http.app import create_app
    from tests.conftest import make_data_dir

    data = make_data_dir(tmp_path / "d", environment="prod")
    key_id, secret = add_caller(data.settings.callers_path, data.settings.keys_dir, Caller("slow", rate_limit_rps=3))
    sink = MemorySink()
    client = await aiohttp_client(create_app(data.settings, sink_factory=lambda s, i: sink))
    creds = Credentials(key_id, secret)
    statuses = []
    for _ in range(6):
        body = json.dumps({"license_key": "LK-x", "feature": "x"}).encode()
        response = await client.post(CHECK, data=body, headers={"Content-Type": "application/json",
                                                                 **creds.headers("POST", CHECK, body)})
        statuses.append(response.status)
    assert statuses == [200, 200, 200, 429, 429, 429]  # a burst of 3, and no time for a token to come back
    assert {r.reason for r in sink.records if r.http_status == 429} == {"RATE_LIMITED"}


async def test_failed_authentication_flood_is_throttled_per_address(gateway, stopped_clock):
    body = b'{"license_key": "LK-x", "feature": "x"}'
    headers = {"Content-Type": "application/json",
               **Credentials("pk_nobody", "x").headers("POST", CHECK, body)}
    statuses = [(await _raw(gateway, body, headers))[0] for _ in range(30)]
    assert statuses == [401] * 20 + [429] * 10  # a burst of 20 failures, and no time for one to come back
    assert {r.auth_error for r in gateway.records if r.http_status == 429} == {"rate_limited"}


async def test_internal_error_is_a_500_deny_without_trace(gateway, monkeypatch):
    issued = gateway.issue(tier="strict")

    async def broken(*args, **kwargs):
        raise RuntimeError("disk on fire /secret/path")

    monkeypatch.setattr(gateway.port.store, "decide_many", broken)
    status, body = await gateway.check(license_key=issued.key, feature="export", user_id="u")
    assert (status, body["decision"], body["reason"]) == (500, "deny", "INTERNAL_ERROR")
    assert "fire" not in json.dumps(body) and "Traceback" not in json.dumps(body)
    assert gateway.records[-1].http_status == 500


async def test_unknown_route_gets_a_json_deny(gateway):
    response = await gateway.client.get("/v1/nothing")
    assert response.status == 404 and (await response.json())["decision"] == "deny"
    response = await gateway.client.get(CHECK)
    assert response.status == 405 and (await response.json())["decision"] == "deny"
