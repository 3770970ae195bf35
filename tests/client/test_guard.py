"""require_feature protecting real aiohttp routes of a service, asking a real gateway."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from aiohttp import web

from gateway.enforcer import Enforcer
from gateway.guard import DECISION, require_feature
from tests.client.conftest import memory_sinks


def days(n: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(days=n)


def service(port) -> web.Application:
    """A service with one guarded route (decorator) and one open route."""
    async def export(request: web.Request) -> web.Response:
        decision = request[DECISION]
        return web.json_response({"exported": True, "reason": decision.reason, "alerts": list(decision.alerts)})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/export", require_feature("reports.export", client=port)(export))
    app.router.add_get("/health", health)
    return app


def headers(key: str | None, user: str | None = "u1") -> dict[str, str]:
    sent = {"X-License-Key": key, "X-User-Id": user}
    return {k: v for k, v in sent.items() if v is not None}


async def test_allowed_requests_reach_the_handler_and_denied_ones_get_403(live, aiohttp_client):
    valid = live.issue(tier="basic", expires_at=days(200))
    expiring = live.issue(tier="basic", expires_at=days(10))
    async with live.client() as port:
        client = await aiohttp_client(service(port))
        ok = await client.get("/export", headers=headers(valid.key))
        assert ok.status == 200 and await ok.json() == {"exported": True, "reason": "VALID", "alerts": []}
        alert = await client.get("/export", headers=headers(expiring.key))
        assert (await alert.json())["alerts"] == ["EXPIRING_SOON"]
        unknown = await client.get("/export", headers=headers("LK-NOT-A-KEY"))
        missing = await client.get("/export", headers=headers(None))
        assert (await client.get("/health")).status == 200
        assert (unknown.status, missing.status) == (403, 403)
        body = await unknown.json()
        assert (body["decision"], body["reason"], body["feature"]) == ("deny", "KEY_NOT_FOUND", "reports.export")
        assert body["decision_id"] == live.records[-2].decision_id
        assert (await missing.json())["reason"] == "INVALID_REQUEST"
    assert [r.user_id for r in live.records] == ["u1", "u1", "u1", "u1"]


async def test_configurable_headers_and_the_middleware_form(live, aiohttp_client):
    strict = live.issue(tier="strict", expires_at=days(200))

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"seats": request[DECISION].seats.used})

    async with live.client() as port:
        guard = require_feature("export", client=port, key_header="Authorization", user_header="X-Account")
        app = web.Application(middlewares=[guard.middleware])
        app.router.add_get("/a", handler)
        client = await aiohttp_client(app)
        first = await client.get("/a", headers={"Authorization": strict.key, "X-Account": "alice"})
        second = await client.get("/a", headers={"Authorization": strict.key, "X-Account": "bob"})
        third = await client.get("/a", headers={"Authorization": strict.key, "X-Account": "carol"})
    assert [first.status, second.status, third.status] == [200, 200, 403]
    assert (await second.json())["seats"] == 2
    assert (await third.json())["reason"] == "SEAT_LIMIT_EXCEEDED"


async def test_an_unreachable_port_is_refused_as_an_outage(live, aiohttp_client):
    valid = live.issue(tier="basic", expires_at=days(200))
    async with live.client(retries=0) as port:
        client = await aiohttp_client(service(port))
        await live.server.close()
        refused = await client.get("/export", headers=headers(valid.key))
        assert refused.status == 503 and (await refused.json())["reason"] == "PORT_UNREACHABLE"


async def test_an_embedded_enforcer_guards_routes_too(data_dir, aiohttp_client):
    valid = data_dir.issue(tier="basic", expires_at=days(200))
    made, factory = memory_sinks()
    with Enforcer.from_data_dir(data_dir.path, environment="prod", sink_factory=factory) as enforcer:
        client = await aiohttp_client(service(enforcer))
        ok = await client.get("/export", headers=headers(valid.key))
        denied = await client.get("/export", headers=headers(valid.key, user=None))
        assert ok.status == 200 and denied.status == 403
        assert (await denied.json())["reason"] == "INVALID_REQUEST"  # the license has a seat limit
    assert [r.endpoint for r in made[0].records] == ["embedded.check"] * 2
