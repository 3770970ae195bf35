"""What every audited request goes through: body cap, content type, authentication, throttling,
then one audit record per decision before the answer leaves (SPEC §3-§5).

The order of the steps is the precedence of SPEC §4: a malformed body is refused before its
signature is looked at, and a remote address that keeps failing authentication is refused
before any HMAC is computed (a flood of bad signatures costs a dictionary lookup each).
"""
from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

import orjson
from aiohttp import web
from uuid_utils import uuid7

from gateway.audit import AuditSink, AuditUnavailable
from gateway.auth import HmacAuthenticator, Nonces
from gateway.callers import Caller, CallerDirectory
from gateway.checks import is_text
from gateway.exchange import Exchange
from gateway.http.client_addr import ClientAddress
from gateway.port import Port
from gateway.ratelimit import RateLimiter
from gateway.types import Reason

LATE_MAX = 10_000  # refusals answered before any handler that may wait for their audit record
SEEN = web.RequestKey("seen", bool)  # on a request the Gate opened an exchange for (gateway.http.strays)

log = logging.getLogger("portcullis.http")
_JSON_TYPES = ("application/json",)
Clock = Callable[[], datetime]
Observer = Callable[[Sequence[Exchange]], None]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Refused(Exception):
    """Stop handling a request; the exchange already carries the refusal."""


class Gate:
    def __init__(self, port: Port, sink: AuditSink, instance: str, clock: Clock = utc_now,
                 peer_identity: Callable[[web.Request], str | None] | None = None,
                 observers: Sequence[Observer] = (), nonces: Nonces | None = None) -> None:
        self.port = port
        self.sink = sink
        self.instance = instance
        self.clock = clock
        self.peer_identity = peer_identity  # set when serving mTLS
        self.auth = HmacAuthenticator(port.directory, port.settings.clock_skew_s, nonces)
        self.caller_limits = RateLimiter()
        self.auth_failures = RateLimiter()  # keyed by client address (behind a trusted proxy: not the proxy's)
        self.client_address = ClientAddress(port.settings.trusted_proxies, port.settings.trusted_proxies_header)
        self.lost_records = 0
        self.observers = tuple(observers)  # metrics, breach watch: told of every answered decision
        self._late: list[Exchange] = []  # refusals answered before any handler, not yet audited
        self._writing_late: asyncio.Task | None = None

    def reload_callers(self) -> CallerDirectory:
        """Authenticate with the callers as they are now (CallersError: the old ones stay)."""
        self.auth.directory = self.port.reload_callers()
        return self.auth.directory

    # -- building exchanges -----------------------------------------------------------------
    def open(self, request: web.Request, endpoint: str) -> Exchange:
        request[SEEN] = True  # audited here: the access log's stray audit leaves it alone
        header_id = request.headers.get("X-Request-Id")
        return self.port.open(endpoint, instance=self.instance, now=self.clock(),
                              remote_addr=self.client_address(request),
                              request_id=header_id[:128] if header_id and is_text(header_id) else None,
                              trace_id=_trace_id(request.headers.get("traceparent")))

    def sibling(self, first: Exchange) -> Exchange:
        """A further decision in the same request (batch): same caller, own decision id."""
        decision_id = str(uuid7())
        return Exchange(
            decision_id=decision_id, request_id=decision_id, now=first.now, received_ns=first.received_ns,
            instance=first.instance, environment=first.environment, remote_addr=first.remote_addr,
            endpoint=first.endpoint, policy_version=first.policy_version, auth_method=first.auth_method,
            caller_id=first.caller_id, trace_id=first.trace_id,
        )

    # -- the steps --------------------------------------------------------------------------
    async def read_json(self, request: web.Request, ex: Exchange) -> Any:
        raw = await self.read(request, ex, _JSON_TYPES)
        try:
            return raw, orjson.loads(raw)
        except (UnicodeDecodeError, ValueError):
            ex.refuse(Reason.INVALID_REQUEST, "body is not valid JSON")
            raise Refused from None

    async def read(self, request: web.Request, ex: Exchange, content_types: Sequence[str]) -> bytes:
        cap = self.port.settings.max_body_bytes
        if request.content_length is not None and request.content_length > cap:
            ex.refuse(Reason.PAYLOAD_TOO_LARGE, f"body larger than {cap} bytes")
            raise Refused
        try:
            if request.content.is_eof():  # the body came with the head: nothing to wait for
                raw = await request.read()
            else:  # a client trickling its body (or a malformed chunk aiohttp never reports) is cut off
                async with asyncio.timeout(self.port.settings.read_timeout_s):
                    raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            ex.refuse(Reason.PAYLOAD_TOO_LARGE, f"body larger than {cap} bytes")
            raise Refused from None
        except TimeoutError:
            ex.refuse(Reason.INVALID_REQUEST, f"body not received within {self.port.settings.read_timeout_s:g} s",
                      status=408)
            raise Refused from None
        if request.content_type not in content_types:
            ex.refuse(Reason.INVALID_REQUEST, f"content type must be {' or '.join(content_types)}", status=415)
            raise Refused
        return raw

    async def authenticate(self, request: web.Request, ex: Exchange, body: bytes) -> Caller:
        # Token buckets run on the monotonic clock (a wall-clock step back must not lock anyone
        # out); signed timestamps are checked against the wall clock.
        now, tick = time.time(), time.monotonic()
        addr = ex.remote_addr
        if self.auth_failures.exhausted(addr, self.port.settings.auth_fail_rps, tick):
            ex.auth_error = "rate_limited"
            ex.refuse(Reason.RATE_LIMITED, "too many failed authentications from this address")
            raise Refused
        if self.peer_identity is not None and "X-Port-Key-Id" not in request.headers:
            identity = self.auth.authenticate_mtls(self.peer_identity(request))
        else:
            identity = await self.auth.authenticate(request.method, request.path_qs, request.headers, body, now)
        ex.auth_method = identity.method
        if identity.caller is None:
            self.auth_failures.allow(addr, self.port.settings.auth_fail_rps, tick)
            ex.auth_error = identity.error
            ex.refuse(Reason.UNAUTHENTICATED, identity.error)
            raise Refused
        ex.caller_id = identity.caller.caller_id
        return identity.caller

    def throttle(self, ex: Exchange, caller: Caller, checks: int = 1) -> None:
        """Take one token of the caller's limit per check the request asks (SPEC §3: each check
        of a batch counts), all or none."""
        if not self.caller_limits.allow(caller.caller_id, caller.rate_limit_rps, time.monotonic(), checks):
            ex.refuse(Reason.RATE_LIMITED, f"caller {caller.caller_id!r} is over {caller.rate_limit_rps} requests/s"
                      + (f" (a batch of {checks} checks counts {checks} times)" if checks > 1 else ""))
            raise Refused

    def require_admin(self, ex: Exchange, caller: Caller) -> None:
        if not caller.admin:
            ex.refuse(Reason.CALLER_NOT_AUTHORIZED, "this endpoint needs an admin caller")
            raise Refused

    # -- finishing --------------------------------------------------------------------------
    async def finish(self, exchanges: Sequence[Exchange], body: Any = None, status: int | None = None) -> web.Response:
        """Audit every decision, then answer. If the trail cannot take them, the answer is 503."""
        decided = time.perf_counter_ns()
        for ex in exchanges:
            ex.decided_ns = ex.decided_ns or decided
        try:
            await self.sink.submit([ex.record() for ex in exchanges])
        except AuditUnavailable as exc:
            if self.port.settings.audit_on_failure != "allow":
                log.error("audit unavailable, refusing", extra={"event": "audit_unavailable", "error": str(exc)})
                first = exchanges[0]
                first.refuse(Reason.AUDIT_UNAVAILABLE)
                return _json(first.answer(), 503)
            self.lost_records += len(exchanges)
        finally:  # after a refusal too, so observers see what was answered
            for observe in self.observers:
                observe(exchanges)
        if body is None:
            body, status = exchanges[0].answer(), exchanges[0].http_status
        return _json(body, status or 200)

    def audit_stray(self, remote_addr: str, endpoint: str, status: int, detail: str, elapsed_s: float) -> None:
        """Audit a refusal answered without passing through here (:mod:`gateway.http.strays`).

        The answer is out already, so the record is written in the background: strays wait in
        one list (at most :data:`LATE_MAX`, so a flood cannot grow memory while the disk is
        slow; past it they are counted as lost) and one task at a time writes what is waiting.
        """
        if len(self._late) >= LATE_MAX:
            self._lose(1, "too many refusals waiting to be audited")
            return
        ex = self.port.open(endpoint, instance=self.instance, now=self.clock(), remote_addr=remote_addr)
        ex.refuse(Reason.PAYLOAD_TOO_LARGE if status == 413 else Reason.INVALID_REQUEST, detail, status=status)
        ex.decided_ns = time.perf_counter_ns()
        ex.received_ns = ex.decided_ns - int(elapsed_s * 1e9)  # when aiohttp began reading it
        self._late.append(ex)
        if self._writing_late is None:
            self._writing_late = asyncio.get_running_loop().create_task(self._write_late())

    async def _write_late(self) -> None:
        try:
            while self._late:
                exchanges, self._late = self._late, []
                try:
                    await self.sink.submit([ex.record() for ex in exchanges])
                except AuditUnavailable as exc:
                    self._lose(len(exchanges), str(exc))
                except Exception:  # a bug must not end the writer, nor lose records uncounted
                    log.exception("refusals not audited", extra={"event": "internal_error"})
                    self._lose(len(exchanges), "internal error")
                for observe in self.observers:
                    observe(exchanges)
        finally:
            self._writing_late = None

    def _lose(self, count: int, why: str) -> None:
        if self.lost_records % 1000 == 0:  # the first, then one line in a thousand
            log.error("refusals not audited: %s", why, extra={"event": "audit_unavailable", "error": why})
        self.lost_records += count

    async def settle(self) -> None:
        """Wait until the records of answers already sent are written (before the sink closes)."""
        while self._writing_late is not None:
            await asyncio.shield(self._writing_late)


def _json(body: Any, status: int) -> web.Response:
    response = web.Response(body=orjson.dumps(body), status=status,
                            content_type="application/json")
    if status == 408:
        response.force_close()  # RFC 9110 §15.5.9: the connection of a timed-out request is closed
    return response


def _trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` (version-traceid-parentid-flags), if well formed."""
    if not traceparent:
        return None
    parts = traceparent.strip().split("-")
    if len(parts) == 4 and len(parts[1]) == 32 and all(c in "0123456789abcdef" for c in parts[1]):
        return parts[1] if parts[1] != "0" * 32 else None
    return None
