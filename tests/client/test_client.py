"""PortClient and SyncPortClient against a real gateway: answers, cache, retries, failing closed."""
from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
from aiohttp import web

from gateway.callers import Caller, add_caller
from gateway.certs import write_pki
from gateway.client import PortClient
from gateway.http.app import create_app
from gateway.http.keys import TLS
from gateway.decision import PORT_UNREACHABLE, Decision
from tests.client.conftest import memory_sinks
from tests.conftest import Credentials


def days(n: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(days=n)


async def test_allow_deny_alert(live):
    valid = live.issue(tier="basic", expires_at=days(200))
    expiring = live.issue(tier="basic", expires_at=days(10))
    async with live.client() as port:
        allow = await port.check(license_key=valid.key, feature="view", user_id="u1", request_id="r-1")
        deny = await port.check(license_key=valid.key, feature="admin", user_id="u1")
        alert = await port.check(license_key=expiring.key, feature="view", user_id="u1")
    assert (allow.decision, allow.reason, allow.allowed, allow.alerts) == ("allow", "VALID", True, ())
    assert (deny.decision, deny.reason, deny.allowed) == ("deny", "FEATURE_NOT_ENTITLED", False)
    assert (alert.decision, alert.reason, alert.allowed, alert.alerts) == ("alert", "EXPIRING_SOON", True,
                                                                           ("EXPIRING_SOON",))
    assert allow.license.id == valid.license.license_id and allow.license.customer == "acme"
    assert allow.seats.used == 1 and allow.seats.limit == 5 and allow.request_id == "r-1"
    assert allow.policy_version == live.port.policy.version and allow.cache_ttl_s == 30
    assert [r.decision_id for r in live.records] == [allow.decision_id, deny.decision_id, alert.decision_id]
    assert {r.caller_id for r in live.records} == {"service"}


async def test_sync_client_gives_the_same_answers(live):
    valid = live.issue(tier="strict", expires_at=days(200))

    def run() -> list[Decision]:
        with live.sync_client() as port:
            return [port.check(license_key=valid.key, feature="export", user_id="u1", quantity=4),
                    port.check(license_key=valid.key, feature="view", user_id="u1"),
                    port.check(license_key="LK-NOT-A-KEY", feature="export")]
    # The gateway runs on this loop, so the blocking client runs on a worker thread.
    metered, denied, unknown = await asyncio.to_thread(run)
    assert (metered.decision, metered.quota.used, metered.quota.limit) == ("allow", 4, 10)
    assert (denied.reason, unknown.reason) == ("FEATURE_NOT_ENTITLED", "KEY_NOT_FOUND")
    assert len(live.records) == 3


async def test_a_repeat_within_its_ttl_is_served_from_the_cache(start_gateway):
    live = await start_gateway(cache_ttl_s=1)
    issued = live.issue(tier="basic", expires_at=days(200))
    async with live.client() as port:
        first = await port.check(license_key=issued.key, feature="view", user_id="u1")
        again = await port.check(license_key=issued.key, feature="view", user_id="u1")
        assert len(live.records) == 1  # the repeat never reached the gateway
        assert (again.cached, again.decision_id, again.decision) == (True, first.decision_id, "allow")
        other_user = await port.check(license_key=issued.key, feature="view", user_id="u2")
        assert not other_user.cached and len(live.records) == 2
        await asyncio.sleep(first.cache_ttl_s + 0.1)
        expired = await port.check(license_key=issued.key, feature="view", user_id="u1")
    assert not expired.cached and expired.decision_id != first.decision_id and len(live.records) == 3


async def test_metered_checks_and_denies_are_never_cached(live):
    issued = live.issue(tier="strict", expires_at=days(200))
    async with live.client() as port:
        for _ in range(2):
            metered = await port.check(license_key=issued.key, feature="export", user_id="u1", quantity=1)
            denied = await port.check(license_key=issued.key, feature="admin", user_id="u1")
    assert not metered.cached and not denied.cached
    assert metered.quota.used == 2 and len(live.records) == 4


async def test_batch_answers_in_order_and_uses_the_cache(live):
    issued = live.issue(tier="basic", expires_at=days(200))
    checks = [{"license_key": issued.key, "feature": "view", "user_id": "u1"},
              {"license_key": issued.key, "feature": "admin", "user_id": "u1"},
              {"license_key": "LK-UNKNOWN", "feature": "view"}]
    async with live.client() as port:
        first = await port.check_batch(checks)
        second = await port.check_batch(checks)
    assert [d.reason for d in first] == ["VALID", "FEATURE_NOT_ENTITLED", "KEY_NOT_FOUND"]
    assert [d.reason for d in second] == [d.reason for d in first]
    assert [d.cached for d in second] == [True, False, False]
    assert len(live.records) == 5 and {r.endpoint for r in live.records} == {"batch"}


async def test_refusals_are_answers_and_are_not_retried(live):
    issued = live.issue(tier="basic", expires_at=days(200))
    wrong = Credentials(live.data.service.key_id, "ps_not-the-secret")
    async with live.client(wrong) as port:
        refused = await port.check(license_key=issued.key, feature="view", user_id="u1")
    async with live.client() as port:
        invalid = await port.check(license_key=issued.key, feature="not a name", user_id="u1")
    assert (refused.reason, refused.http_status, refused.allowed) == ("UNAUTHENTICATED", 401, False)
    assert (invalid.reason, invalid.http_status) == ("INVALID_REQUEST", 400)
    assert [r.http_status for r in live.records] == [401, 400]  # one request each: no retry


async def test_a_stopped_gateway_fails_closed_without_waiting_for_a_timeout(live):
    """A refused connection is an answer at once: with minute-long timeouts the call still ends
    in a fraction of a second (three attempts and two short backoffs); waiting for any timeout
    would take a minute."""
    issued = live.issue(tier="basic", expires_at=days(200))
    async with live.client(retries=2, timeout_s=60, connect_timeout_s=60) as port:
        assert (await port.check(license_key=issued.key, feature="reports.a", user_id="u1")).allowed
        await live.server.close()
        started = time.monotonic()
        decision = await asyncio.wait_for(port.check(license_key=issued.key, feature="view", user_id="u1",
                                                     request_id="r-9"), 60)
        elapsed = time.monotonic() - started
    assert elapsed < 30
    assert (decision.decision, decision.reason, decision.allowed) == ("deny", PORT_UNREACHABLE, False)
    assert (decision.http_status, decision.decision_id, decision.request_id) == (0, None, "r-9")
    assert "cannot connect" in decision.detail


async def test_fail_open_is_an_explicit_per_feature_choice(live):
    issued = live.issue(tier="basic", expires_at=days(200))
    await live.server.close()
    async with live.client(fail_open_features={"view", "reports.*"}, retries=0) as port:
        view = await port.check(license_key=issued.key, feature="view", user_id="u1")
        report = await port.check(license_key=issued.key, feature="reports.sales", user_id="u1")
        export = await port.check(license_key=issued.key, feature="export", user_id="u1")
        again = await port.check(license_key=issued.key, feature="view", user_id="u1")
    assert (view.decision, view.reason, view.allowed, view.alerts) == ("alert", PORT_UNREACHABLE, True,
                                                                       (PORT_UNREACHABLE,))
    assert report.allowed and not again.cached  # a client-side answer is never cached
    assert (export.decision, export.allowed) == ("deny", False)


async def test_a_caller_known_by_its_certificate_needs_no_key(data_dir, tmp_path):
    identity = "spiffe://corp/billing"
    pki = write_pki(tmp_path / "pki", ca_name="test CA", server_name="localhost", clients=[identity],
                    now=datetime.now(timezone.utc))
    add_caller(data_dir.settings.callers_path, data_dir.settings.keys_dir,
               Caller("billing", mtls_identities=(identity,)), with_key=False)
    issued = data_dir.issue(tier="unlimited")
    settings = data_dir.settings.with_(tls_cert=pki["server"]["cert"], tls_key=pki["server"]["key"],
                                       client_ca=pki["ca"]["cert"])
    made, factory = memory_sinks()
    app = create_app(settings, sink_factory=factory)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=app[TLS].context)
        await site.start()
        context = ssl.create_default_context(cafile=pki["ca"]["cert"])
        context.load_cert_chain(pki["clients"][0]["cert"], pki["clients"][0]["key"])
        async with PortClient(f"https://localhost:{runner.addresses[0][1]}", ssl_context=context) as port:
            decision = await port.check(license_key=issued.key, feature="anything")
    finally:
        await runner.cleanup()
    assert (decision.decision, decision.reason) == ("allow", "VALID")
    assert [(r.caller_id, r.auth_method) for r in made[0].records] == [("billing", "mtls")]


class ClosingPort:
    """A TCP server that accepts each connection and closes it unanswered, counting them."""

    def __init__(self) -> None:
        self.connections = 0

    async def __aenter__(self) -> str:
        async def accept(reader, writer):
            self.connections += 1
            await reader.read(1)
            writer.close()
        self.server = await asyncio.start_server(accept, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()


@pytest.mark.parametrize("quantity,attempts", [(0, 3), (5, 1)])
async def test_a_request_that_may_have_arrived_is_resent_only_when_it_consumes_nothing(quantity, attempts):
    probe = ClosingPort()
    async with probe as url, PortClient(url, "pk_x", "ps_x", retries=2, backoff_s=0.01) as port:
        decision = await port.check(license_key="LK-A", feature="export", user_id="u1", quantity=quantity)
    assert (decision.reason, probe.connections) == (PORT_UNREACHABLE, attempts)


async def test_a_silent_port_times_out_within_the_bound():
    """Each attempt waits timeout_s, no longer: two attempts take at least 2 × 0.2 s, and end
    well within ten times the documented worst case (a port that never answers would hold the
    call for ever)."""
    async def silent(reader, writer):
        await reader.read(-1)
    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    timeout_s, retries, backoff_s = 0.2, 1, 0.01
    try:
        async with PortClient(url, "pk_x", "ps_x", timeout_s=timeout_s, retries=retries, backoff_s=backoff_s) as port:
            started = time.monotonic()
            decision = await asyncio.wait_for(port.check(license_key="LK-A", feature="view"), 60)
            elapsed = time.monotonic() - started
    finally:
        server.close()
    assert decision.reason == PORT_UNREACHABLE and "no answer" in decision.detail
    worst_case = (retries + 1) * timeout_s + backoff_s
    assert (retries + 1) * timeout_s <= elapsed < 10 * worst_case


def test_the_client_does_not_load_the_analytics_stack():
    code = ("import sys, gateway.client; heavy = {'duckdb', 'pyarrow', 'streamlit', 'pandas', 'plotly'}; "
            "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
