"""What a worker does twice a second besides answering: follow the registry, the policy and the
callers, and copy its audit sink's counters into the metrics.

Policy reloads reach every worker through the ``policy`` generation of the shared signals: the
worker that reloads (admin API) or the master (SIGHUP) bumps it, and every worker that sees it
move reloads ``policy.toml`` itself within a second. Each worker's reload leaves an audit record
(endpoint ``policy.reload``, its instance, the version now in force, or the error that kept the
old one), so the trail says when every instance switched.

Callers need no announcement: every worker polls its caller source's version
(:class:`gateway.callers.CallerSource`) and reloads when it moves, so ``portcullis caller
remove``, ``rotate``, ``drop-key`` and hand edits reach every worker within a second; a policy
reload (SIGHUP, admin API) picks up a change at once too. Each such reload is audited as
``callers.reload`` (how many callers and keys are now in force, or the error that kept the old
ones): the trail says from when each instance stopped accepting a removed key.

With several hosts on PostgreSQL the same polls read the shared registry, off the event loop,
and the registry's change notifications wake them at once (:func:`listen_forever`); a poll
that fails marks the registry unreachable and the first that succeeds marks it back
(:class:`gateway.registry.reachability.Reachability`).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from gateway.audit import AuditSink, AuditUnavailable
from gateway.callers import CallersError
from gateway.exchange import Exchange
from gateway.http.gate import Clock, Gate
from gateway.metrics import Metrics
from gateway.policy import PolicyError
from gateway.port import Port
from gateway.registry import RegistryUnavailable
from gateway.registry.signals import POLICY_GENERATION, Signals
from gateway.types import Decision, Outcome, Reason

log = logging.getLogger("portcullis.upkeep")
INTERVAL_S = 0.5


class CallerReloads:
    def __init__(self, gate: Gate, sink: AuditSink, instance: str, clock: Clock) -> None:
        self.gate, self.sink, self.instance, self.clock = gate, sink, instance, clock

    async def follow(self) -> None:
        """Reload the callers if their source changed, and audit it. (Its version covers every
        byte of what is loaded, so an unchanged version means a reload would change nothing.)"""
        port = self.gate.port
        if not await port.registry_call(port.callers_changed):
            return
        ex = port.open("callers.reload", instance=self.instance, now=self.clock())
        try:
            directory = await port.registry_call(self.gate.reload_callers)
        except CallersError as exc:
            log.error("callers reload refused", extra={"event": "callers_reload_failed", "error": str(exc)})
            ex.refuse(Reason.INVALID_REQUEST, f"callers refused, the previous ones stay in force: {exc}")
        else:
            callers, keys = len(directory.callers), len(directory.by_key_id)
            log.info("callers reloaded", extra={"event": "callers_reload", "callers": callers, "keys": keys})
            ex.decide(None, Decision(Outcome.ALLOW, Reason.VALID, f"{callers} callers with {keys} keys in force"))
        await _audit(self.sink, ex)


class PolicyReloads:
    def __init__(self, port: Port, signals: Signals, sink: AuditSink, instance: str, clock: Clock,
                 callers: CallerReloads) -> None:
        self.port, self.signals, self.sink, self.instance, self.clock = port, signals, sink, instance, clock
        self.callers = callers  # reloaded with the policy, and followed on their own
        self._seen = signals.generation(POLICY_GENERATION)

    def announce(self) -> None:
        """This worker has just reloaded the policy: make every other worker follow."""
        self._seen = self.signals.bump(POLICY_GENERATION)

    def reload(self, ex: Exchange) -> bool:
        """Reload ``policy.toml`` in this worker, the outcome recorded in ``ex``; False if refused
        (the old policy stays in force)."""
        old = self.port.policy.version
        try:
            policy = self.port.reload_policy()
        except PolicyError as exc:
            log.error("policy reload refused", extra={"event": "policy_reload_failed", "policy_version": old,
                                                      "error": str(exc)})
            ex.refuse(Reason.INVALID_REQUEST, f"policy refused, version {old} stays in force: {exc}")
            return False
        log.info("policy reloaded", extra={"event": "policy_reload", "old": old, "new": policy.version})
        ex.policy_version = policy.version
        ex.decide(None, Decision(Outcome.ALLOW, Reason.VALID, f"policy {policy.version} in force (was {old})"))
        return True

    async def follow(self) -> None:
        """Reload (policy and callers) when another process bumped the generation, and audit it."""
        generation = await self.port.registry_call(self.signals.generation, POLICY_GENERATION)
        if generation == self._seen:
            return
        self._seen = generation
        ex = self.port.open("policy.reload", instance=self.instance, now=self.clock())
        self.reload(ex)
        await _audit(self.sink, ex)
        await self.callers.follow()


async def _audit(sink: AuditSink, ex: Exchange) -> None:
    ex.decided_ns = time.perf_counter_ns()
    try:
        await sink.submit([ex.record()])
    except AuditUnavailable as exc:
        log.error("%s not audited", ex.endpoint, extra={"event": "audit_unavailable", "error": str(exc)})


async def listen_forever(url: str, wake: asyncio.Event) -> None:
    """Wake the upkeep as soon as any host or the CLI changes licenses, callers or the policy
    generation (PostgreSQL's notifications, sent when such a change commits). The half-second
    poll stays: it catches what was missed while this connection was down, and sees the registry
    come back."""
    from gateway.registry.pgconn import changes  # psycopg only where a shared registry is used

    while True:
        try:
            async for _ in changes(url):
                wake.set()
        except RegistryUnavailable:
            pass  # the upkeep's poll notes the outage; listen again in a second
        await asyncio.sleep(1.0)
        wake.set()


async def upkeep_forever(port: Port, reloads: PolicyReloads, metrics: Metrics, gate: Gate,
                         wake: asyncio.Event) -> None:
    """Every half second, or at once when ``wake`` is set (:func:`listen_forever`)."""
    while True:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), INTERVAL_S)
        wake.clear()
        # Each step on its own: a registry that is briefly locked must not hold back the metrics.
        _step(metrics.sample, gate.sink, gate.lost_records)
        try:
            await port.follow()  # also how an unreachable registry is seen to be back
        except Exception:
            log.exception("registry refresh failed", extra={"event": "upkeep_failed"})
        for follow in (reloads.follow, reloads.callers.follow):
            try:
                await follow()
            except RegistryUnavailable as exc:  # logged once per outage; retried next time
                port.registry.failed(exc)
            except Exception:  # a bug: logged, the old policy or callers stay
                log.exception("%s failed", follow.__qualname__, extra={"event": "upkeep_failed"})


def _step(function, *args) -> None:
    try:
        function(*args)
    except Exception:
        log.exception("upkeep step failed", extra={"event": "upkeep_failed", "step": function.__qualname__})
