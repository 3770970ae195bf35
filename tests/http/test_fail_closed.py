"""Faults fail closed: no trail means no decision (503), and a bug is an audited 500 deny on
every audited endpoint, never an unrecorded answer."""
from __future__ import annotations

from typing import Sequence

import pytest

from gateway.audit import AuditRecord, AuditUnavailable, MemorySink
from gateway.http.app import create_app
from tests.http.conftest import Gateway


class BrokenTrail(MemorySink):
    """A trail that cannot make anything durable (a full disk, a read-only spool)."""

    async def submit(self, records: Sequence[AuditRecord]) -> None:
        raise AuditUnavailable("spool: No space left on device")

    def healthy(self) -> bool:
        return False


@pytest.fixture
def broken_gateway(aiohttp_client, data_dir):
    async def make(**overrides) -> Gateway:
        settings = data_dir.settings.with_(**overrides)
        sink = BrokenTrail()
        client = await aiohttp_client(create_app(settings, sink_factory=lambda s, i: sink))
        return Gateway(client, data_dir, sink)
    return make


async def test_audit_unavailable_is_a_503_deny_and_not_ready(broken_gateway):
    gateway = await broken_gateway()
    issued = gateway.issue(tier="unlimited")
    status, body = await gateway.check(license_key=issued.key, feature="anything")
    assert (status, body["decision"], body["reason"]) == (503, "deny", "AUDIT_UNAVAILABLE")
    assert "No space" not in body["detail"]
    status, body = await gateway.post("/v1/check/batch", {"checks": [{"license_key": issued.key, "feature": "x"}] * 3})
    assert (status, body["reason"]) == (503, "AUDIT_UNAVAILABLE")
    response = await gateway.client.get("/readyz")
    assert response.status == 503 and (await response.json())["checks"]["audit"] is False


async def test_on_failure_allow_answers_and_counts_what_it_lost(broken_gateway):
    gateway = await broken_gateway(audit_on_failure="allow")
    issued = gateway.issue(tier="unlimited")
    status, body = await gateway.check(license_key=issued.key, feature="anything")
    assert (status, body["reason"]) == (200, "VALID")
    from gateway.http.keys import GATE
    assert gateway.client.server.app[GATE].lost_records == 1


@pytest.mark.parametrize("endpoint", ["license.get", "admin.revoke", "admin.policy_reload"])
async def test_a_bug_in_any_audited_handler_is_an_audited_500(gateway, monkeypatch, endpoint):
    def broken(*args, **kwargs):
        raise RuntimeError("database on fire at /secret/path")

    if endpoint == "license.get":
        monkeypatch.setattr(gateway.port.index, "by_id", type("Broken", (), {"get": broken})())
        status, body = await gateway.get("/v1/licenses/lic_x", creds=gateway.data.admin)
    elif endpoint == "admin.revoke":
        monkeypatch.setattr(gateway.port.store, "set_status", broken)
        status, body = await gateway.post("/v1/admin/licenses/lic_x/revoke", {}, creds=gateway.data.admin)
    else:
        from gateway.http.keys import GATE
        monkeypatch.setattr(gateway.client.server.app[GATE].port, "reload_policy", broken)
        status, body = await gateway.post("/v1/admin/policy/reload", {}, creds=gateway.data.admin)
    assert (status, body["decision"], body["reason"]) == (500, "deny", "INTERNAL_ERROR")
    assert "fire" not in str(body)
    assert [(r.endpoint, r.http_status) for r in gateway.records] == [(endpoint, 500)]
