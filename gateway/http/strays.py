"""Requests refused before any handler runs still leave an audit record.

aiohttp's parser refuses some requests before the application sees them (header floods,
oversized heads, broken framing: a plain-text 400), and the router refuses paths and methods the
gateway does not serve (404, 405: a JSON deny from the catch-all route). Neither passes through the
:class:`~gateway.http.gate.Gate`, which audits everything else. aiohttp's access log is the one
place that sees every response, so the application installs an access logger (through
``handler_args``, which every runner honours) that audits each refused response the Gate did
not see, as endpoint ``http.parse`` or ``http.route``, with the parser's or router's message as
the error. It also writes the access log line when ``access_log`` is on.

These answers are sent before anything is audited (aiohttp writes them itself), so their records
are written after the fact, at most once: one the trail cannot take, or one a crash catches
between the answer and the spool, is lost (the first kind is counted in ``lost_records``).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from gateway.checks import is_text
from gateway.http.gate import SEEN, Gate
from gateway.logs import AccessLogger, redact

ACCESS_LOG = logging.getLogger("portcullis.access")
log = logging.getLogger(__name__)
_DETAIL_CHARS = 160
_QUOTED = re.compile(r"\bb(['\"]).*$")  # the request bytes a parser message quotes, to the end


def access_logger(gate: Callable[[], Gate], lines: bool) -> type[AbstractAccessLogger]:
    """The access logger class of one application (aiohttp instantiates it per server); ``gate``
    gives the application's Gate once it has started."""

    class GatewayAccessLog(AccessLogger):
        @property
        def enabled(self) -> bool:
            return True  # auditing strays does not depend on the log level

        def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
            try:
                stray = 400 <= response.status < 500 and not request.get(SEEN)
                if not (lines or stray):
                    return
                client = gate().client_address(request)
                if lines:
                    self.line(request, response, time, client)
                if stray:
                    gate().audit_stray(client, *_what(request, response), time)
            except Exception:  # the connection must not pay for it: aiohttp would close it
                log.exception("access log failed", extra={"event": "internal_error"})

    return GatewayAccessLog


def _what(request: web.BaseRequest, response: web.StreamResponse) -> tuple[str, int, str]:
    """(endpoint, status, error) of a stray refusal. The error may echo what the client sent, so
    it is one printable line, shortened, without the bytes the parser quotes (they may cut a
    secret in half), anything secret-shaped redacted, and valid Unicode."""
    if response.content_type == "application/json":  # the catch-all route's deny (errors.py)
        endpoint, error = "http.route", f"{response.reason}: {request.method} {request.rel_url.raw_path}"
    else:  # aiohttp's own plain answer to a request its parser refused
        text = getattr(response, "text", None) or ""
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        endpoint, error = "http.parse", _QUOTED.sub("", first).rstrip(" :")
    error = "".join(c if c.isprintable() else "?" for c in redact(error or response.reason or "refused"))
    error = error[:_DETAIL_CHARS]
    return endpoint, response.status, error if is_text(error) else response.reason or "refused"
