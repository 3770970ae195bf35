"""Webhooks against a real local aiohttp receiver: signed, retried with backoff, every attempt
audited, one notification per event, and never a key or a secret in a body."""
from __future__ import annotations

import contextlib
import json
import sqlite3
import stat
import time
from datetime import datetime, timedelta, timezone

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from gateway import webhooks
from gateway.audit import MemorySink
from gateway.http.app import create_app
from gateway.registry.signals import SqliteSignals

from tests.conftest import Credentials, wait_until


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


def _tallies(db_path, subject: str) -> dict[int, int]:
    """The failures of ``subject`` (``caller:<id>``, ``addr:<address>``) the gateways have flushed
    into the shared tallies, by minute."""
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        return dict(db.execute("SELECT window, count FROM tallies WHERE subject = ?", (subject,)).fetchall())


def _tallied(db_path, caller_id: str) -> int:
    return sum(_tallies(db_path, f"caller:{caller_id}").values())


def _one_notice_per_minute_over(threshold: int, receiver: Receiver, db_path, subject: str) -> list[dict]:
    """The breach notices, checked to be one for each minute whose count reached the threshold."""
    notices = [json.loads(body) for _, body in receiver.events("breach.suspected")]
    over = [window for window, count in _tallies(db_path, subject).items() if count >= threshold]
    assert over, "no minute reached the threshold"
    assert sorted(datetime.fromisoformat(n["window_start"]).timestamp() for n in notices) == sorted(
        window * webhooks.WINDOW_S for window in over)
    return notices


async def _two_ticks(client, creds: Credentials, caller_id: str, db_path) -> None:
    """Return once ``client``'s notifier has gone round its loop (once a second) twice more, so
    whatever it was to send before the first of these rounds has been sent: each round is seen
    by its flushing one more KEY_NOT_FOUND answer of ``caller_id`` (too few to raise a notice)."""
    body = b'{"license_key": "LK-tick", "feature": "x"}'
    for _ in range(2):
        before = _tallied(db_path, caller_id)
        headers = {"Content-Type": "application/json", **creds.headers("POST", "/v1/check", body)}
        assert (await (await client.post("/v1/check", data=body, headers=headers)).json())["reason"] == "KEY_NOT_FOUND"
        await wait_until(lambda: _tallied(db_path, caller_id) == before + 1, what="the notifier's next flush")


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
    await wait_until(lambda: len(receiver.events("license.expiring")) == 2, what="two delivery attempts")

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
    await _two_ticks(other, data_dir.service, "service", settings.db_path)
    assert len(receiver.events("license.expiring")) == 2


async def test_authentication_failures_from_one_address_raise_a_breach_notice(data_dir, receiver, aiohttp_client):
    receiver.fail_first = 0
    sink = MemorySink()
    settings = data_dir.settings.with_(webhooks_url=receiver.url, webhooks_breach_threshold=5)
    client = await aiohttp_client(create_app(settings, sink_factory=lambda s, w: sink))
    body = b'{"license_key": "LK-x", "feature": "x"}'

    async def fail(n: int) -> None:
        for _ in range(n):
            headers = {"Content-Type": "application/json",
                       **Credentials("pk_nobody", "x").headers("POST", "/v1/check", body)}
            assert (await client.post("/v1/check", data=body, headers=headers)).status == 401
    await fail(9)  # counted by the minute of their flush: 9 reach 5 in one minute
    await wait_until(lambda: receiver.events("breach.suspected"), what="a breach notice")
    await fail(9)  # more, after the notice: no second one for the same minute
    await _two_ticks(client, data_dir.service, "service", settings.db_path)
    doc, *_ = _one_notice_per_minute_over(5, receiver, settings.db_path, "addr:127.0.0.1")
    assert (doc["kind"], doc["remote_addr"], doc["threshold"]) == ("authentication_failures", "127.0.0.1", 5)
    assert doc["count_at_least"] >= 5
    records = [r for r in sink.records if r.endpoint == "webhook.deliver"]
    assert {(r.reason, r.remote_addr, r.http_status) for r in records} == {("UNAUTHENTICATED", "127.0.0.1", 200)}
    assert len(records) == len(receiver.got)


def test_tallies_and_claims_add_up_over_workers(tmp_path):
    signals = [SqliteSignals(tmp_path / "r.db") for _ in range(2)]
    watches = [webhooks.BreachWatch(threshold=4) for _ in range(2)]

    class Ex:
        auth_error, remote_addr, caller_id, decision = "bad_signature", "10.0.0.9", None, None
    for watch in watches:
        watch.observe([Ex(), Ex()])
    now = time.time()

    def flush(i: int) -> list:
        return watches[i].breaches(signals[i], watches[i].take(), watches[i].threshold, now)
    assert flush(0) == []  # 2 of 4 so far
    (notice,) = flush(1)  # 4 of 4, over both workers
    assert notice.remote_addr == "10.0.0.9" and notice.reason.value == "UNAUTHENTICATED"
    watches[0].observe([Ex()])
    assert flush(0) == []  # already claimed in this window
    for s in signals:
        s.close()


async def _deliveries(client, result: str) -> float:
    exposition = await (await client.get("/metrics")).text()
    return sum(s.value for f in text_string_to_metric_families(exposition) for s in f.samples
               if s.name == "portcullis_webhook_deliveries_total" and s.labels["result"] == result)


async def test_a_receiver_that_always_fails_is_given_up_after_webhooks_attempts(data_dir, receiver, aiohttp_client):
    receiver.fail_first = 1_000_000
    lic = data_dir.issue(tier="unlimited", expires_at=datetime.now(timezone.utc) + timedelta(days=3))
    sink = MemorySink()
    settings = data_dir.settings.with_(webhooks_url=receiver.url, webhooks_attempts=3, webhooks_backoff_s=0.05)
    client = await aiohttp_client(create_app(settings, sink_factory=lambda s, w: sink))
    # Counted after the last attempt, so all are in by then.
    await wait_until(lambda: _deliveries(client, "gave_up"), 30, "the notice to be given up")

    attempts = receiver.events("license.expiring")
    assert len(attempts) == 3 == len(receiver.got)
    assert len({h["X-Portcullis-Delivery"] for h, _ in attempts}) == 1 and len({b for _, b in attempts}) == 1
    assert await _deliveries(client, "failed") == 3 and await _deliveries(client, "delivered") == 0
    records = [r for r in sink.records if r.endpoint == "webhook.deliver"]
    assert [(r.http_status, r.error) for r in records] == [(500, "receiver answered 500")] * 3
    assert {(r.request_id, r.decision, r.reason, r.license_id) for r in records} == {
        (attempts[0][0]["X-Portcullis-Delivery"], "alert", "EXPIRING_SOON", lic.license.license_id)}


async def test_a_caller_probing_for_keys_raises_one_breach_notice(data_dir, receiver, aiohttp_client):
    """KEY_NOT_FOUND answers to one authenticated caller, through the real gateway: one notice
    for the window, naming the caller, however many more answers follow."""
    receiver.fail_first = 0
    sink = MemorySink()
    threshold = 5
    settings = data_dir.settings.with_(webhooks_url=receiver.url, webhooks_breach_threshold=threshold)
    client = await aiohttp_client(create_app(settings, sink_factory=lambda s, w: sink))
    probes = iter(range(1000))

    async def probe(n: int) -> None:
        for i in (next(probes) for _ in range(n)):
            body = json.dumps({"license_key": f"LK-probe-{i:03d}", "feature": "x"}).encode()
            headers = {"Content-Type": "application/json", **data_dir.service.headers("POST", "/v1/check", body)}
            response = await client.post("/v1/check", data=body, headers=headers)
            answer = await response.json()
            assert (response.status, answer["decision"], answer["reason"]) == (200, "deny", "KEY_NOT_FOUND")

    # Counts go by the minute in which they are flushed: 2 × threshold - 1 reach the threshold in
    # one minute even if a minute ends while they are sent.
    await probe(2 * threshold - 1)
    await wait_until(lambda: receiver.events("breach.suspected"), what="a breach notice")
    await probe(2 * threshold - 1)  # more, after the notice: no second one for the same minute
    await _two_ticks(client, data_dir.admin, "admin", settings.db_path)  # another caller's

    notices = _one_notice_per_minute_over(threshold, receiver, settings.db_path, "caller:service")
    headers, payload = receiver.events("breach.suspected")[0]
    doc = json.loads(payload)
    assert (doc["kind"], doc["caller_id"], doc["threshold"]) == ("key_probing", "service", threshold)
    assert doc["count_at_least"] >= threshold and "remote_addr" not in doc
    assert "LK-probe" not in payload.decode() and data_dir.service.secret not in payload.decode()
    records = [r for r in sink.records if r.endpoint == "webhook.deliver"]
    assert len(records) == len(notices)  # one attempt each, accepted at once
    assert (records[0].reason, records[0].caller_id, records[0].http_status, records[0].request_id) == (
        "KEY_NOT_FOUND", "service", 200, headers["X-Portcullis-Delivery"])


@pytest.mark.parametrize(("skew", "tolerance", "fresh"), [
    (0, None, True), (300, None, True), (-300, None, True), (301, None, False), (-301, None, False),
    (60, 60, True), (-60, 60, True), (61, 60, False), (-61, 60, False)])
def test_verify_accepts_a_timestamp_within_the_tolerance_either_way_and_refuses_one_beyond(skew, tolerance, fresh):
    """The receiver's clock ``skew`` seconds after (or before) the timestamp; 300 s by default."""
    secret, body, sent = b"whsec_test", b'{"id":"n1"}', 1_767_268_800
    header = webhooks.signature(secret, str(sent), body)
    given = {} if tolerance is None else {"tolerance_s": tolerance}
    assert webhooks.verify(secret, str(sent), body, header, now=sent + skew, **given) is fresh


def test_verify_refuses_a_timestamp_that_is_not_a_number():
    header = webhooks.signature(b"s", "soon", b"{}")
    assert not webhooks.verify(b"s", "soon", b"{}", header, now=0)
