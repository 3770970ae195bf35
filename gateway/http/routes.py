"""URL map of the port. ``gateway/http/openapi.py`` documents exactly these routes (a test checks)."""
from __future__ import annotations

from aiohttp import web

from gateway.http import handlers, impact
from gateway.http.openapi import openapi

ROUTES = [
    web.post("/v1/check", handlers.check),
    web.post("/v1/check/batch", handlers.check_batch),
    web.get("/v1/licenses/{license_id}", handlers.get_license, allow_head=False),
    web.post("/v1/admin/licenses", handlers.import_license),
    web.post("/v1/admin/licenses/{license_id}/{action:revoke|suspend|resume}", handlers.change_status),
    web.post("/v1/admin/policy/reload", handlers.reload_policy),
    web.post("/v1/admin/policy/impact", impact.policy_impact),
    web.get("/healthz", handlers.healthz, allow_head=False),
    web.get("/readyz", handlers.readyz, allow_head=False),
    web.get("/metrics", handlers.metrics, allow_head=False),
    web.get("/openapi.json", openapi, allow_head=False),
]


def setup_routes(app: web.Application) -> None:
    app.add_routes(ROUTES)
