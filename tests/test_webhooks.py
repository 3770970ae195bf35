"""Webhooks against a real local aiohttp receiver: signed, retried with backoff, every attempt
audited, one notification per event, and never a key or a secret in a body."""
from __future__ import annotations

import asyncio
import json
import stat
import time
from datetime import datetime, timedelta, timezone

import pytest
from aiohttp import web

from gateway import webhooks
from gateway.audit import MemorySink
from gateway.http.app import create_app
from gateway.registry.signals import SqliteSignals

from tests.conftest import Credentials


class Receiver:
    """Answers 500 to the first ``fail_first`` deliveries, then 200; keeps what it got."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.got: list[tuple[dict, bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((dict(request.headers), await request.read()))
        return web.Response(status=500 if len(self.got) <= self.fail_first else 200)

    def events(self, event: str) -> list[tuple[dict, bytes]]:
        return [(h, b) for h, b in self.got if h["X-Portcullis-Event"] == event]


async def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.fixture
async def receiver(aiohttp_server):
    receiver = Receiver(fail_first=1)
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = await aiohttp_server(app)
    receiver.url = str(server.make_url("/hook"))
    return receiver


async def test_expiring_license_is_notified_signed_and_retried(data_dir, receiver, aiohttp_client):
    soon = data_dir.issue(tier="unlimited", expires_at=datetime.now(timezone.utc) + timedelta(days=3))
    data_dir.issue(tier="unlimited", expires_at=datetime.now(timezone.utc) + timedelta(days=300))
    sink = MemorySink()
    settings = data_dir.settings.with_(webhooks_url=receiver.url, webhooks_backoff_s=0.05)
    client = await aiohttp_client(create_app(settings, sink_factory=lambda s, w: sink))
    await _until(lambda: len(receiver.events("license.expiring")) == 2)

    secret_file = settings.webhooks_secret_path
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_bytes().strip()
    (first_headers, first_body), (headers, body) = receiver.events("license.expiring")
    assert first_body == body and first_headers["X-Portcullis-Delivery"] == headers["X-Portcullis-Delivery"]
    assert webhooks.verify(secret, headers["X-Portcullis-Timestamp"], body, headers["X-Portcullis-Signature"],
                           time.time())
    assert not webhooks.verify(b"other", headers["X-Portcullis-Timestamp"], body, headers["X-Portcullis-Signature"],
                               time.time())
    doc = json.loads(body)
    assert doc["license"]["id"] == soon.license.license_id and doc["license"]["days_left"] in (2, 3)
    assert soon.key not in body.decode() and soon.license.key_hash not in body.decode()

    attempts = [r for r in sink.records if r.endpoint == "webhook.deliver"]
    assert [r.http_status for r in attempts] == [500, 200]
    assert {r.request_id for r in attempts} == {doc["id"]}
    assert {(r.decision, r.reason, r.license_id) for r in attempts} == {
        ("alert", "EXPIRING_SOON", soon.license.license_id)}
    assert attempts[0].error == "receiver answered 500" and attempts[1].error is None
    metrics = await (await client.get("/metrics")).text()
    assert 'portcullis_webhook_deliveries_total{result="delivered"} 1.0' in metrics

    # A second gateway on the same registry (another worker) does not notify again.
    other = await aiohttp_client(create_app(settings, sink_factory=lambda s, w: MemorySink(), worker=1))
    assert (await other.get("/healthz")).status == 200
    await asyncio.sleep(1.5)
    assert len(receiver.events("license.expiring")) == 2


async def test_authentication_failures_from_one_address_raise_a_breach_notice(data_dir, receiver, aiohttp_client):
    receiver.fail_first = 0
    sink = MemorySink()
    settings = data_dir.settings.with_(webhooks_url=receiver.url, webhooks_breach_threshold=5)
    client = await aiohttp_client(create_app(settings, sink_factory=lambda s, w: sink))
    body = b'{"license_key": "LK-x", "feature": "x"}'
    for _ in range(8):
        headers = {"Content-Type": "application/json", **Credentials("pk_nobody", "x").headers("POST", "/v1/check", body)}
        assert (await client.post("/v1/check", data=body, headers=headers)).status == 401
    await _until(lambda: receiver.events("breach.suspected"))
    await asyncio.sleep(1.2)
    (headers, payload), = receiver.events("breach.suspected")  # once per window, not once per failure
    doc = json.loads(payload)
    assert (doc["kind"], doc["remote_addr"], doc["threshold"]) == ("authentication_failures", "127.0.0.1", 5)
    assert doc["count_at_least"] >= 5
    (record,) = [r for r in sink.records if r.endpoint == "webhook.deliver"]
    assert (record.reason, record.remote_addr, record.http_status) == ("UNAUTHENTICATED", "127.0.0.1", 200)


def test_tallies_and_claims_add_up_over_workers(tmp_path):
    signals = [SqliteSignals(tmp_path / "r.db") for _ in range(2)]
    watches = [webhooks.BreachWatch(threshold=4) for _ in range(2)]

    class Ex:
        auth_error, remote_addr, caller_id, decision = "bad_signature", "10.0.0.9", None, None
    for watch in watches:
        watch.observe([Ex(), Ex()])
    now = time.time()
    assert watches[0].flush(signals[0], now) == []  # 2 of 4 so far
    (notice,) = watches[1].flush(signals[1], now)  # 4 of 4, over both workers
    assert notice.remote_addr == "10.0.0.9" and notice.reason.value == "UNAUTHENTICATED"
    watches[0].observe([Ex()])
    assert watches[0].flush(signals[0], now) == []  # already claimed in this window
    for s in signals:
        s.close()
