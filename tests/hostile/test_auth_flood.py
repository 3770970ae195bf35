"""A flood of bad signatures costs no HMAC: once a remote address has failed authentication
``auth_fail_rps`` times (burst), it is refused with 429 before any signature is computed."""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time

import pytest

import gateway.auth as auth_module

CHECK = "/v1/check"
BODY = json.dumps({"license_key": "LK-x", "feature": "f"}).encode()


def spec_headers(key_id: str, secret: str, body: bytes = BODY, signature: str | None = None) -> dict[str, str]:
    """Signed as SPEC §3 says, without the gateway's code (whose HMAC calls are being counted)."""
    timestamp, nonce = str(int(time.time())), secrets.token_urlsafe(18)
    canonical = f"POST\n{CHECK}\n{timestamp}\n{nonce}\n{hashlib.sha256(body).hexdigest()}".encode()
    return {"X-Port-Key-Id": key_id, "X-Port-Timestamp": timestamp, "X-Port-Nonce": nonce,
            "X-Port-Signature": signature or hmac.new(secret.encode(), canonical, hashlib.sha256).hexdigest(),
            "Content-Type": "application/json"}


@pytest.fixture
def hmac_calls(monkeypatch) -> list[int]:
    """Counts every HMAC-SHA256 the authenticator computes over a request."""
    calls: list[int] = []
    real = auth_module.sign

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(auth_module, "sign", counted)
    return calls


async def _forged(gateway) -> int:
    """A request under a real key id with a wrong signature: only HMAC can tell it is bad."""
    headers = spec_headers(gateway.data.service.key_id, "", signature="0" * 64)
    response = await gateway.client.post(CHECK, data=BODY, headers=headers)
    return response.status


async def test_the_21st_bad_signature_is_refused_before_any_hmac(gateway, hmac_calls, stopped_clock):
    burst = int(gateway.data.settings.auth_fail_rps)
    statuses = [await _forged(gateway) for _ in range(burst + 10)]
    assert statuses == [401] * burst + [429] * 10
    assert len(hmac_calls) == burst  # the 10 refused ones cost a dictionary lookup, no HMAC
    refused = gateway.records[burst:]
    assert {(r.http_status, r.reason, r.auth_error) for r in refused} == {(429, "RATE_LIMITED", "rate_limited")}


async def test_a_throttled_address_is_refused_even_with_a_good_signature(gateway, hmac_calls, stopped_clock):
    for _ in range(int(gateway.data.settings.auth_fail_rps)):
        await _forged(gateway)
    before = len(hmac_calls)
    good = spec_headers(gateway.data.service.key_id, gateway.data.service.secret)
    response = await gateway.client.post(CHECK, data=BODY, headers=good)
    body = await response.json()
    assert (response.status, body["reason"]) == (429, "RATE_LIMITED") and len(hmac_calls) == before


async def test_successful_authentications_do_not_spend_the_failure_budget(gateway):
    for _ in range(50):
        good = spec_headers(gateway.data.service.key_id, gateway.data.service.secret)
        assert (await gateway.client.post(CHECK, data=BODY, headers=good)).status == 200
    statuses = [await _forged(gateway) for _ in range(int(gateway.data.settings.auth_fail_rps))]
    assert set(statuses) == {401}


async def test_unknown_key_ids_cost_no_hmac_at_all(gateway, hmac_calls):
    headers = spec_headers("pk_nobody", "x")
    for _ in range(5):
        assert (await gateway.client.post(CHECK, data=BODY, headers=headers)).status == 401
    assert hmac_calls == []
    assert {r.auth_error for r in gateway.records} == {"unknown_key_id"}
