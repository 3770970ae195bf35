"""Structured logs: one JSON object per line on standard error, with a guard that no secret leaves.

Every line has ``time``, ``level``, ``event``, ``message`` and ``logger``, then this process's
context (``instance`` once a worker knows it) and whatever the call passed as ``extra=``
(``decision_id``, ``request_id``, ``license_id``, ``caller_id``, ...).

The redaction guard is the last step of formatting, so it covers the message, every extra field
and tracebacks alike: fields named like a secret (``license_key``, ``secret``, ``signature``, ...)
are replaced whatever they hold, and anything shaped like a secret of this system (license keys,
caller secrets, webhook secrets, 64+ hex digits such as the fingerprint secret, PEM private keys)
or registered with :func:`protect` is replaced wherever it appears. Code should never log a
secret; the guard makes a slip harmless instead of a leak.
"""
from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import BaseRequest, StreamResponse

REDACTED = "[REDACTED]"
_SHAPES = re.compile(
    r"LK-[A-Z2-7]{5}(?:-[A-Z2-7]{5}){4}"  # license keys
    r"|\b(?:ps|whsec)_[A-Za-z0-9_-]{20,}"  # caller HMAC secrets, webhook secrets
    r"|\b[0-9a-fA-F]{64,}\b"  # raw hex secrets (fingerprint secret), key hashes, signatures
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----"
)
_SECRET_FIELD = re.compile(r"(?:^|_)(?:key|secret|password|token|signature|authorization)$", re.IGNORECASE)
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
_CONTEXT: dict[str, Any] = {}
_PROTECTED: set[str] = set()


def protect(*values: str) -> None:
    """Register secrets of a shape the guard cannot know (e.g. a hand-written webhook secret)."""
    _PROTECTED.update(v for v in values if v and len(v) >= 8)


def set_context(**fields: Any) -> None:
    """Fields added to every line of this process (a worker sets its ``instance``)."""
    _CONTEXT.update(fields)


def redact(text: str) -> str:
    text = _SHAPES.sub(REDACTED, text)
    for value in _PROTECTED:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": record.__dict__.get("event") or "log",
            "message": record.getMessage(),
            "logger": record.name,
            **_CONTEXT,
        }
        for name, value in record.__dict__.items():
            if name not in _RESERVED and name != "event":
                doc[name] = REDACTED if _SECRET_FIELD.search(name) else value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(doc, default=str, ensure_ascii=False))


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access log as structured lines (the path only: a query string is not logged)."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.line(request, response, time, request.remote or "")

    def line(self, request: BaseRequest, response: StreamResponse, time: float, remote_addr: str) -> None:
        """One line; ``remote_addr`` is the client's (behind a trusted proxy, not the peer's)."""
        self.logger.info("%s %s %s", request.method, request.path, response.status, extra={
            "event": "access", "method": request.method, "path": request.path, "status": response.status,
            "duration_ms": round(time * 1000, 3), "remote_addr": remote_addr,
            "request_id": request.headers.get("X-Request-Id")})


class ProtocolErrors(logging.Filter):
    """aiohttp logs every request its parser refuses (header floods, broken framing) as an error
    with a traceback: a flood of malformed requests would become a flood of multi-line errors.
    Each becomes one warning line naming the problem and the peer."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.event = "bad_http_request"
            record.error = f"{type(error).__name__}: {getattr(error, 'message', error)}"[:200]
            record.exc_info = record.exc_text = None
        return True


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    """Send every logger's records to ``stream`` (default standard error) as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ProtocolErrors) for f in server.filters):
        server.addFilter(ProtocolErrors())
