"""Middlewares: only what must wrap every route. Kept to one, because each costs every request."""
from __future__ import annotations

import logging

from aiohttp import web
from uuid_utils import uuid7

from gateway.types import Outcome, Reason

log = logging.getLogger("portcullis.http")


def _error(status: int, reason: Reason, detail: str) -> web.Response:
    decision_id = str(uuid7())
    return web.json_response({"decision": Outcome.DENY.value, "reason": reason.value, "detail": detail,
                              "decision_id": decision_id, "request_id": decision_id, "feature": None,
                              "license": None, "alerts": [], "seats": None, "quota": None,
                              "policy_version": "", "cache_ttl_s": 0}, status=status)


@web.middleware
async def decision_shaped_errors(request: web.Request, handler) -> web.StreamResponse:
    """Unknown routes and wrong methods get a JSON deny too, and no stack trace ever leaves.

    Audited endpoints catch their own errors (so they can audit them); this is the last net.
    """
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = Reason.PAYLOAD_TOO_LARGE if exc.status == 413 else Reason.INVALID_REQUEST
        return _error(exc.status, reason, exc.reason)
    except Exception:
        log.exception("unhandled error", extra={"event": "internal_error", "path": request.path})
        return _error(500, Reason.INTERNAL_ERROR, "internal error: the request was refused")
