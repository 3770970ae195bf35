"""POST /v1/check/batch: results in request order, one decision id and one audit record each."""
from __future__ import annotations

import asyncio

import pytest

from gateway.audit import MemorySink
from gateway.callers import Caller, add_caller
from gateway.checks import MAX_BATCH
from gateway.http.app import create_app
from tests.conftest import Credentials
from tests.http.conftest import Gateway


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


async def test_a_registry_failure_refuses_the_checks_that_needed_it(gateway, monkeypatch):
    """The batch's registry work is one transaction: if it fails, each check it held is a 500
    deny with its own record; checks decided without it keep their answers."""
    issued = gateway.issue(tier="strict")

    async def broken(*args, **kwargs):
        raise RuntimeError("disk on fire /secret/path")

    monkeypatch.setattr(gateway.port.store, "decide_many", broken)
    checks = [{"license_key": issued.key, "feature": "export", "user_id": "u1", "quantity": 1},
              {"license_key": "LK-unknown", "feature": "b"},
              {"license_key": issued.key, "feature": "export", "user_id": "u2", "quantity": 1},
              {"license_key": issued.key, "feature": "export", "bogus": 1}]
    status, body = await gateway.post("/v1/check/batch", {"checks": checks})
    assert status == 200 and "fire" not in str(body)
    assert [(r["status"], r["reason"]) for r in body["results"]] == [
        (500, "INTERNAL_ERROR"), (200, "KEY_NOT_FOUND"), (500, "INTERNAL_ERROR"), (400, "INVALID_REQUEST")]
    assert [r.http_status for r in gateway.records] == [500, 200, 500, 400]


async def test_a_bug_reading_one_item_is_that_items_audited_500(gateway, monkeypatch):
    import gateway.http.handlers as handlers
    real = handlers.read_check

    def broken_on_b(ex, item):
        if item.get("feature") == "b":
            raise RuntimeError("a bug in parsing /secret/path")
        return real(ex, item)

    monkeypatch.setattr(handlers, "read_check", broken_on_b)
    good = gateway.issue(tier="unlimited")
    checks = [{"license_key": good.key, "feature": f} for f in ("a", "b", "c")]
    status, body = await gateway.post("/v1/check/batch", {"checks": checks})
    assert status == 200 and "secret" not in str(body)
    assert [(r["status"], r["reason"]) for r in body["results"]] == [
        (200, "VALID"), (500, "INTERNAL_ERROR"), (200, "VALID")]
    assert [r.http_status for r in gateway.records] == [200, 500, 200]


@pytest.fixture
async def slow(aiohttp_client, data_dir) -> tuple[Gateway, Credentials]:
    """A gateway with a caller limited to 3 checks a second (its bucket holds 3)."""
    key_id, secret = add_caller(data_dir.settings.callers_path, data_dir.settings.keys_dir,
                                Caller("slow", rate_limit_rps=3))
    sink = MemorySink()
    client = await aiohttp_client(create_app(data_dir.settings, sink_factory=lambda settings, instance: sink))
    return Gateway(client, data_dir, sink), Credentials(key_id, secret)


async def test_each_check_of_a_batch_counts_against_the_rate_limit(slow):
    gateway, creds = slow
    guesses = [{"license_key": f"LK-GUESS-{i}", "feature": f"f{i}", "request_id": f"r{i}"} for i in range(3)]
    status, body = await gateway.post("/v1/check/batch", {"checks": guesses}, creds=creds)
    assert status == 200 and [r["reason"] for r in body["results"]] == ["KEY_NOT_FOUND"] * 3
    status, body = await gateway.post("/v1/check/batch", {"checks": guesses}, creds=creds)
    assert (status, body["decision"], body["reason"]) == (429, "deny", "RATE_LIMITED")
    refused = gateway.records[3:]
    assert [(r.http_status, r.reason, r.endpoint, r.caller_id) for r in refused] == \
        [(429, "RATE_LIMITED", "batch", "slow")] * 3
    assert [(r.feature, r.request_id) for r in refused] == [("f0", "r0"), ("f1", "r1"), ("f2", "r2")]
    assert len({r.decision_id for r in refused}) == 3 and all(r.key_fp is None for r in refused)
    await asyncio.sleep(1.1)  # at 3 tokens a second the bucket is full again (it never holds more)
    status, _ = await gateway.post("/v1/check/batch", {"checks": guesses + guesses[:1]}, creds=creds)
    assert status == 429  # 4 checks are more than the caller may ask at once: none is answered
    status, body = await gateway.post("/v1/check/batch", {"checks": guesses}, creds=creds)
    assert status == 200 and len(body["results"]) == 3  # the refused batch took no tokens
    assert len(gateway.records) == 3 + 3 + 4 + 3
