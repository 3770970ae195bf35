"""The port mounted as a module: the gateway's engine, registry, policy and audit trail in-process.

A Python service that embeds the port decides through the same :class:`~gateway.port.Port`
sequence as ``POST /v1/check`` (strict body parsing, key lookup, engine, atomic usage), so the
rules cannot drift between the two. The embedding service is trusted: no signature, every scope,
``caller_id = "embedded"`` and ``auth_method = "none"`` in the trail, endpoint ``embedded.check``.

Every decision is handed to the audit sink before it is returned; when the sink cannot make it
durable the answer is a deny ``AUDIT_UNAVAILABLE``, as at the gateway (``audit.on_failure``).
All work runs on one private event-loop thread: the durable sink is async and the registry's
SQLite connection must not be used from two threads at once. ``check`` blocks on that thread,
``acheck`` awaits it from the caller's own loop.
"""
from __future__ import annotations

import logging
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from gateway.audit import AuditSink, AuditUnavailable
from gateway.callers import Caller
from gateway.config import Settings, load_settings
from gateway.decision import Decision, check_request
from gateway.loopthread import LoopThread
from gateway.port import Port, read_check
from gateway.types import Reason

log = logging.getLogger("portcullis.enforcer")
EMBEDDED = Caller("embedded")  # every scope: the embedding process owns the data directory
ENDPOINT = "embedded.check"
# Like a gateway worker, pick up registry changes made elsewhere (CLI, gateway admin API).
REFRESH_INTERVAL_S = 1.0
Clock = Callable[[], datetime]
SinkFactory = Callable[[Settings, int], AuditSink]  # (settings, worker index), as for create_app


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Enforcer:
    """Decide checks in-process. ``with Enforcer.from_data_dir("data") as port: port.check(...)``."""

    def __init__(self, port: Port, sink: AuditSink, *, instance: str, clock: Clock = _utc_now) -> None:
        self.port, self.sink, self.instance, self.clock = port, sink, instance, clock
        self.lost_records = 0  # records lost under audit.on_failure = "allow"
        self._refreshed = time.monotonic()
        self._thread = LoopThread("portcullis-enforcer")
        start = getattr(sink, "start", None)
        if start is not None:
            try:
                self._thread.run(start())
            except BaseException:
                self._thread.stop()
                raise

    @classmethod
    def from_data_dir(cls, path: str | Path, *, environment: str | None = None, instance: str | None = None,
                      sink_factory: SinkFactory | None = None, clock: Clock = _utc_now) -> Enforcer:
        """Open a data directory made by ``portcullis init`` (settings from its portcullis.toml and
        ``PORTCULLIS_*``), with the durable audit trail unless another sink factory is given.

        ``instance`` names this process in audit records and files (default: the gateway's
        instance name, or the host name, plus ``-embedded``). It must be stable across restarts,
        so that a restarted process converts what its predecessor left in its spool, and unique
        among the processes writing to the directory: a second process with the same name is
        refused when it opens the spool.
        """
        settings = load_settings(path, environment=environment)
        settings = settings.with_(instance=instance or f"{settings.instance or socket.gethostname()}-embedded")
        if sink_factory is None:
            from gateway.audit.writer import DurableSink
            sink_factory = DurableSink.from_settings
        port = Port(settings)
        try:
            return cls(port, sink_factory(settings, 0), instance=settings.instance_id(0), clock=clock)
        except BaseException:
            port.close()
            raise

    @property
    def settings(self) -> Settings:
        return self.port.settings

    def check(self, **fields: Any) -> Decision:
        """Decide one check; arguments as :func:`gateway.decision.check_request` (and ``PortClient.check``)."""
        return self._thread.run(self._check(check_request(**fields)))

    async def acheck(self, **fields: Any) -> Decision:
        """``check`` for async code: awaits the decision without blocking the caller's loop."""
        return await self._thread.wrap(self._check(check_request(**fields)))

    def refresh(self) -> int:
        """See registry changes now instead of within ``REFRESH_INTERVAL_S``; returns how many."""
        return self._thread.run(self._refresh())

    def close(self) -> None:
        """Flush the audit trail and release the registry. Idempotent."""
        if not self._thread.loop.is_closed():
            try:
                self._thread.run(self._close())
            finally:
                self._thread.stop()

    async def aclose(self) -> None:
        """``close`` for async code: the flush does not block the caller's loop."""
        if not self._thread.loop.is_closed():
            try:
                await self._thread.wrap(self._close())
            finally:
                self._thread.stop()

    def __enter__(self) -> Enforcer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Enforcer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- on the private loop ----------------------------------------------------------------------
    async def _close(self) -> None:
        try:
            await self.sink.close()
        finally:
            self.port.close()

    async def _refresh(self) -> int:
        self._refreshed = time.monotonic()
        return self.port.refresh()

    async def _check(self, doc: dict[str, Any]) -> Decision:
        if time.monotonic() - self._refreshed >= REFRESH_INTERVAL_S:
            try:
                await self._refresh()
            except Exception:  # the index in memory stays valid; the next call tries again
                log.exception("registry refresh failed", extra={"event": "refresh_failed"})
        ex = self.port.open(ENDPOINT, instance=self.instance, now=self.clock())
        ex.caller_id = EMBEDDED.caller_id
        try:
            body = read_check(ex, doc)
            if body is not None:
                await self.port.check(ex, body, EMBEDDED)
        except Exception:
            log.exception("decision failed", extra={"event": "internal_error", "decision_id": ex.decision_id})
            ex.refuse(Reason.INTERNAL_ERROR)
        ex.decided_ns = time.perf_counter_ns()
        try:
            await self.sink.submit([ex.record()])
        except AuditUnavailable as exc:
            if self.settings.audit_on_failure != "allow":
                log.error("audit unavailable, refusing", extra={"event": "audit_unavailable", "error": str(exc)})
                ex.refuse(Reason.AUDIT_UNAVAILABLE)
            else:
                self.lost_records += 1
        return Decision.from_answer(ex.answer(), ex.http_status)
