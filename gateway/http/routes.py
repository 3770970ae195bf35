"""URL map of the port. ``gateway/http/openapi.py`` documents exactly these routes (a test checks)."""
from __future__ import annotations

from aiohttp import web

from gateway.http import handlers, impact
from gateway.http.errors import last_net, unrouted
from gateway.http.openapi import openapi

ROUTES = [
    web.post("/v1/check", last_net(handlers.check)),
    web.post("/v1/check/batch", last_net(handlers.check_batch)),
    web.get("/v1/licenses/{license_id}", last_net(handlers.get_license), allow_head=False),
    web.post("/v1/admin/licenses", last_net(handlers.import_license)),
    web.post("/v1/admin/licenses/{license_id}/{action:revoke|suspend|resume}", last_net(handlers.change_status)),
    web.post("/v1/admin/policy/reload", last_net(handlers.reload_policy)),
    web.post("/v1/admin/policy/impact", last_net(impact.policy_impact)),
    web.get("/healthz", last_net(handlers.healthz), allow_head=False),
    web.get("/readyz", last_net(handlers.readyz), allow_head=False),
    web.get("/metrics", last_net(handlers.metrics), allow_head=False),
    web.get("/openapi.json", last_net(openapi), allow_head=False),
]


def setup_routes(app: web.Application) -> None:
    """The routes, then the catch-all that answers every other path and method (tried last:
    aiohttp tries a path's longest prefix first)."""
    app.add_routes(ROUTES)
    app.router.add_route("*", r"/{path:[\s\S]*}", unrouted)
