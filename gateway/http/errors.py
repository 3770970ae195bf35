"""Decision-shaped errors for what no handler answers itself, without a middleware.

A middleware costs every request two more coroutine calls and aiohttp's wrapper around them; the
check endpoints pay for nothing they do not need. Instead:

- a catch-all route, tried after every other, answers unknown paths (404) and methods a path
  does not serve (405, with ``Allow``) with a JSON deny;
- :func:`last_net` wraps each handler: an HTTP error or a bug that escapes it becomes a JSON deny
  (no stack trace ever leaves). Audited endpoints catch their own errors, so they can audit
  them; this is the last net.
"""
from __future__ import annotations

import functools
import logging
from typing import Awaitable, Callable

import orjson
from aiohttp import web
from uuid_utils import uuid7

from gateway.types import Outcome, Reason

log = logging.getLogger("portcullis.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, reason: Reason, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    decision_id = str(uuid7())
    return web.Response(body=orjson.dumps({
        "decision": Outcome.DENY.value, "reason": reason.value, "detail": detail, "decision_id": decision_id,
        "request_id": decision_id, "feature": None, "license": None, "alerts": [], "seats": None, "quota": None,
        "policy_version": "", "cache_ttl_s": 0}), status=status, content_type="application/json", headers=headers)


def last_net(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def shielded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            reason = Reason.PAYLOAD_TOO_LARGE if exc.status == 413 else Reason.INVALID_REQUEST
            return error_response(exc.status, reason, exc.reason)
        except Exception:
            log.exception("unhandled error", extra={"event": "internal_error", "path": request.path})
            return error_response(500, Reason.INTERNAL_ERROR, "internal error: the request was refused")
    return shielded


async def unrouted(request: web.Request) -> web.Response:
    """The catch-all route's handler: 405 if another route serves the path, else 404."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not request.match_info.route.resource:
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        return error_response(405, Reason.INVALID_REQUEST, "Method Not Allowed", {"Allow": ",".join(sorted(allowed))})
    return error_response(404, Reason.INVALID_REQUEST, "Not Found")
