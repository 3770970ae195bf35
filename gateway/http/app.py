"""``create_app(settings)``: the aiohttp application, with every resource in one cleanup context."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import AsyncIterator, Callable

from aiohttp import web

from gateway.audit import AuditSink
from gateway.audit.housekeeping import keep_forever
from gateway.config import Settings
from gateway.http import strays
from gateway.http.gate import Clock, Gate, utc_now
from gateway.http.keys import GATE, METRICS, PORT, RELOADS, SETTINGS, SINK, TLS
from gateway.http.routes import setup_routes
from gateway.http.upkeep import CallerReloads, PolicyReloads, listen_forever, upkeep_forever
from gateway.metrics import Metrics
from gateway.nonce_journal import JournaledNonces, read_journal
from gateway.port import Port
from gateway.registry import open_shared_nonces, open_signals
from gateway.registry.nonces import SharedNonces
from gateway.registry.reachability import Reachability, ReachableNonces
from gateway.tls import PeerIdentityError, ServerTLS, TLSConfigError, peer_identity
from gateway.webhooks import Notifier

log = logging.getLogger("portcullis")
SinkFactory = Callable[[Settings, int], AuditSink]  # (settings, worker index) -> sink
TLS_POLL_INTERVAL_S = 5.0


def durable_sink(settings: Settings, worker: int) -> AuditSink:
    from gateway.audit.writer import DurableSink
    return DurableSink.from_settings(settings, worker)


def create_app(settings: Settings, *, sink_factory: SinkFactory = durable_sink, clock: Clock = utc_now,
               worker: int = 0) -> web.Application:
    """The gateway application. With ``settings.tls_cert`` set, ``app[TLS].context`` is the SSL
    context to serve with (certificate and client CA reloaded from disk when they change)."""
    # Every runner (serve's workers, tests' servers) takes its access logger from handler_args:
    # it also audits the refusals no handler sees (gateway.http.strays).
    access_log = strays.access_logger(lambda: app[GATE], lines=settings.access_log)
    app = web.Application(client_max_size=settings.max_body_bytes,
                          handler_args={"access_log": strays.ACCESS_LOG, "access_log_class": access_log})
    app[SETTINGS] = settings
    if settings.tls_cert:
        app[TLS] = ServerTLS(settings.tls_cert, settings.tls_key, settings.client_ca or None)
        app.cleanup_ctx.append(_tls_reloader)
    app.cleanup_ctx.append(_resources(settings, sink_factory, clock, worker))
    setup_routes(app)
    return app


def client_identity(request: web.Request) -> str | None:
    """The verified client certificate's identity (SPEC §3); None refuses it as bad_client_cert."""
    try:
        return peer_identity(request.transport.get_extra_info("ssl_object") if request.transport else None)
    except PeerIdentityError:
        return None


async def _tls_reloader(app: web.Application) -> AsyncIterator[None]:
    """Poll the certificate and trust bundle so they can be replaced without a restart."""
    async def poll() -> None:
        while True:
            await asyncio.sleep(TLS_POLL_INTERVAL_S)
            try:
                if app[TLS].reload_if_changed():
                    log.info("TLS material reloaded", extra={"event": "tls_reload"})
            except TLSConfigError as exc:
                log.error("TLS reload refused, previous material stays", extra={"event": "tls_reload_failed",
                                                                                 "error": str(exc)})
    task = asyncio.create_task(poll())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _nonces(settings: Settings, registry: Reachability) -> SharedNonces | ReachableNonces | JournaledNonces:
    """Where this worker remembers nonces, across restarts either way: several workers share them
    in the registry (or a replay picks another worker), one keeps them in memory with a journal
    (:mod:`gateway.nonce_journal`: a write transaction per request would cost ten times more).
    Each takes in the other's unexpired nonces, so changing ``--workers`` opens no replay window.
    Several hosts share them in PostgreSQL, as reachable as the registry (:class:`ReachableNonces`)."""
    now, window = time.time(), settings.clock_skew_s
    shared = open_shared_nonces(settings, window)
    if settings.workers > 1 or settings.registry_url:  # several hosts share them too
        shared.absorb(read_journal(settings.nonce_journal_dir, window, now))
        return ReachableNonces(shared, registry, window) if settings.registry_url else shared
    try:
        earlier = list(shared.unexpired(now))
    finally:
        shared.close()
    return JournaledNonces(settings.nonce_journal_dir, window, now, earlier)


def _resources(settings: Settings, sink_factory: SinkFactory, clock: Clock, worker: int):
    async def context(app: web.Application) -> AsyncIterator[None]:
        instance = settings.instance_id(worker)
        port = Port(settings)
        sink = sink_factory(settings, worker)
        start = getattr(sink, "start", None)
        if start is not None:
            await start()
        signals = open_signals(settings)
        nonces = _nonces(settings, port.registry)
        metrics = Metrics(port)
        notifier = Notifier(settings, port, signals, sink, instance, metrics) if settings.webhooks_url else None
        gate = Gate(port, sink, instance, clock,
                    peer_identity=client_identity if settings.tls_cert and settings.client_ca else None,
                    observers=[metrics.observe] + ([notifier.observe] if notifier else []), nonces=nonces)
        reloads = PolicyReloads(port, signals, sink, instance, clock, CallerReloads(gate, sink, instance, clock))
        app[PORT], app[SINK], app[GATE], app[METRICS], app[RELOADS] = port, sink, gate, metrics, reloads
        wake = asyncio.Event()
        background = [asyncio.create_task(upkeep_forever(port, reloads, metrics, gate, wake))]
        if settings.registry_url:  # other hosts' changes arrive as notifications
            background.append(asyncio.create_task(listen_forever(settings.registry_url, wake)))
        if notifier is not None:
            background.append(asyncio.create_task(notifier.run()))
        if worker == 0:  # compaction and retention of this host's chain
            background.append(asyncio.create_task(keep_forever(settings, clock)))
        log.info("gateway ready", extra={"event": "ready", "instance": instance, "licenses": len(port.index),
                                         "policy_version": port.policy.version})
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await gate.settle()
            await sink.close()  # after the tasks and the late records: they still get in
            signals.close()
            nonces.close()
            port.close()
    return context
