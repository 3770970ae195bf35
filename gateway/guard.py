"""Protect aiohttp routes with the port: ``@require_feature("export", client=port)``.

The guard reads the license key and the user from request headers, asks the port, and stores
the :class:`~gateway.decision.Decision` on the request (``request[DECISION]``) for the handler
to read (alerts, seats, quota). A refusal is answered before the handler runs, as JSON with the
reason: 403 when the port denied, 503 when it could not decide (unreachable, or its own
``AUDIT_UNAVAILABLE`` / ``INTERNAL_ERROR``) so the outage shows as one in the service's metrics.

A request without the key header is asked about all the same (with an empty key): the port
refuses it as ``INVALID_REQUEST`` and the attempt is in the audit trail like any other.
"""
from __future__ import annotations

import functools
from typing import Any, Awaitable, Callable

from aiohttp import web

from gateway.decision import Decision

DECISION = web.RequestKey("portcullis_decision", Decision)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FeatureGuard:
    """One feature's guard: a decorator for handlers, or (``.middleware``) for a whole app."""

    def __init__(self, feature: str, *, client: Any, key_header: str = "X-License-Key",
                 user_header: str = "X-User-Id", product: str | None = None) -> None:
        # A PortClient answers through ``check``, an in-process Enforcer through ``acheck``: both
        # are awaited without blocking the service's loop.
        self._ask = getattr(client, "acheck", None) or client.check
        self.feature, self.product = feature, product
        self.key_header, self.user_header = key_header, user_header

    async def run(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        refused = await self.admit(request)
        return refused if refused is not None else await handler(request)

    async def admit(self, request: web.Request) -> web.Response | None:
        """Ask the port; None lets the request through, else the refusal to send instead."""
        decision = await self._ask(license_key=request.headers.get(self.key_header, ""), feature=self.feature,
                                   user_id=request.headers.get(self.user_header) or None, product=self.product)
        request[DECISION] = decision
        if decision.allowed:
            return None
        undecided = decision.http_status == 0 or decision.http_status >= 500
        return web.json_response({"decision": decision.decision, "reason": decision.reason,
                                  "detail": decision.detail, "decision_id": decision.decision_id,
                                  "feature": self.feature}, status=503 if undecided else 403)

    def __call__(self, handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            return await self.run(request, handler)
        return guarded

    @property
    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        @web.middleware
        async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self.run(request, handler)
        return guard


def require_feature(feature: str, *, client: Any, key_header: str = "X-License-Key",
                    user_header: str = "X-User-Id", product: str | None = None) -> FeatureGuard:
    """Guard for ``feature``. Decorate a handler with it, or add ``.middleware`` to an app."""
    return FeatureGuard(feature, client=client, key_header=key_header, user_header=user_header, product=product)
