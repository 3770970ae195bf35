"""The port without its transport: registry index, policy and callers around the pure engine.

The HTTP adapter and the embedded :class:`gateway.Enforcer` both decide through a ``Port``, so
a service that mounts the port as a module gets exactly the rules the gateway applies.
"""
from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Sequence

from uuid_utils import uuid7

from gateway.callers import Caller, CallerDirectory, CallerSource, open_callers
from gateway.checks import CheckBody, InvalidRequest, lenient_fields, parse_check
from gateway.config import Settings
from gateway.engine import decide, degraded, metering
from gateway.exchange import Exchange
from gateway.keyfiles import fingerprint_secret
from gateway.licenses import key_fingerprint, key_hash
from gateway.policy import load_policy
from gateway.registry import LicenseIndex, Metered, RegistryBusy, RegistryUnavailable, Store, open_store
from gateway.registry.reachability import Reachability
from gateway.types import Check, Decision, License, Policy, Reason, Usage

_FP_CACHE_MAX = 200_000
_NO_USAGE = Usage()


class Port:
    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store: Store = store or open_store(settings)
        self.registry = Reachability(cached=settings.registry_on_unavailable == "cached")
        self.index = LicenseIndex(self.store)
        self.policy: Policy = load_policy(settings.policy_path)
        self.callers: CallerSource = open_callers(settings)
        self.callers_version = self.callers.version()
        self.directory: CallerDirectory = self.callers.load()
        self._fp_secret = fingerprint_secret(settings.keys_dir)
        self._fingerprints: dict[str, str] = {}

    # -- hot path -------------------------------------------------------------------------
    def open(self, endpoint: str, *, instance: str, now: datetime, remote_addr: str = "",
             request_id: str | None = None, trace_id: str | None = None) -> Exchange:
        """A new exchange under the policy in force; its request id defaults to its decision id."""
        decision_id = str(uuid7())
        return Exchange(decision_id=decision_id, request_id=request_id or decision_id, now=now,
                        received_ns=time.perf_counter_ns(), instance=instance,
                        environment=self.settings.environment, remote_addr=remote_addr, endpoint=endpoint,
                        policy_version=self.policy.version, trace_id=trace_id)

    async def check(self, ex: Exchange, body: CheckBody, caller: Caller) -> Exchange:
        """Decide one well-formed check for a known caller: lookup, caller scope, engine.

        The one sequence behind ``/v1/check``, each item of ``/v1/check/batch`` and the embedded
        Enforcer, so the three can never disagree.
        """
        await self.check_many([(ex, body)], caller)
        return ex

    async def check_many(self, asked: Sequence[tuple[Exchange, CheckBody]], caller: Caller) -> None:
        """Decide well-formed checks of one caller in order, the usage of them all read and
        changed in one registry transaction (one round trip for a batch).

        If the shared registry cannot be reached, :class:`RegistryUnavailable` is raised (every
        check that needed it answered 503), or in the "cached" mode each such check is answered
        from memory or refused by itself (:func:`_from_memory`). Any other failure of the store
        leaves the checks that needed it undecided and is raised.
        """
        metered: list[Metered] = []
        waiting: list[tuple[Exchange, License]] = []
        for ex, body in asked:
            lic = self.lookup(ex, body)
            check = self.check_of(body, lic)
            if not self.authorize(ex, caller, check, lic):
                continue
            if lic is None:
                ex.decide(None, decide(None, self.policy, check, _NO_USAGE, ex.now, self.settings.cache_ttl_s))
                continue
            metered.append(self.metered(lic, check, ex.now))
            waiting.append((ex, lic))
        if not metered:
            return
        try:
            self.registry.require()
            decisions = await self.store.decide_many(metered)
        except RegistryUnavailable as exc:
            self.registry.failed(exc)
            if not self.registry.cached or isinstance(exc, RegistryBusy):
                raise
            decisions = [_from_memory(m) for m in metered]
        for (ex, lic), decision in zip(waiting, decisions):
            if decision is None:
                ex.refuse(Reason.REGISTRY_UNAVAILABLE)
            else:
                ex.decide(lic, decision)

    def metered(self, lic: License, check: Check, now: datetime) -> Metered:
        """What the store needs to decide ``check`` on ``lic`` under the policy in force."""
        policy, ttl = self.policy, self.settings.cache_ttl_s
        meter = metering(lic, policy, check, now)
        return Metered(lic, meter, check.user_id, now,
                       lambda usage: decide(lic, policy, check, usage, now, ttl, meter))

    def fingerprint(self, hashed_key: str) -> str:
        fp = self._fingerprints.get(hashed_key)
        if fp is None:
            if len(self._fingerprints) >= _FP_CACHE_MAX:
                self._fingerprints.clear()
            fp = self._fingerprints[hashed_key] = key_fingerprint(self._fp_secret, hashed_key)
        return fp

    def lookup(self, ex: Exchange, body: CheckBody) -> License | None:
        """Find the license a key names; records the key's fingerprint (never the key)."""
        hashed = key_hash(body.license_key)
        ex.key_fp = self.fingerprint(hashed)
        return self.index.by_hash.get(hashed)

    def check_of(self, body: CheckBody, lic: License | None) -> Check:
        return Check(feature=body.feature, environment=body.environment or self.settings.environment,
                     user_id=body.user_id, product=body.product or (lic.product if lic else None),
                     quantity=body.quantity)

    def authorize(self, ex: Exchange, caller: Caller, check: Check, lic: License | None) -> bool:
        """Caller scope (SPEC §3): refuses with 403 when it does not cover the check.

        The scope must cover the license's own product, and a product the body names as well:
        naming a product in scope must not open a license of another. The refusal tells the
        caller nothing about the license; its audit record names it for analysts.
        """
        own, asked = (lic.product if lic is not None else None), check.product
        if own is None:
            products: tuple[str, ...] = () if asked is None else (asked,)
        else:
            products = (own,) if asked is None or asked == own else (own, asked)
        why = caller.refusal(products, check.feature, check.environment)
        if why is not None:
            ex.refuse(Reason.CALLER_NOT_AUTHORIZED, why, about=lic)
            return False
        return True

    # -- state changes ---------------------------------------------------------------------
    def reload_policy(self) -> Policy:
        """Load policy.toml; on error the old policy stays in force and PolicyError is raised."""
        self.policy = load_policy(self.settings.policy_path)
        return self.policy

    def reload_callers(self) -> CallerDirectory:
        """Load the callers again; on error the old ones stay in force and CallersError is raised.

        The version is taken before the load: a change made in between is seen by the next
        :meth:`callers_changed`, and a broken file is not retried until it changes again."""
        self.callers_version = self.callers.version()
        self.directory = self.callers.load()
        return self.directory

    def callers_changed(self) -> bool:
        return self.callers.version() != self.callers_version

    def refresh(self) -> int:
        """Pull the registry's changes into the index (for a caller with no event loop)."""
        return self.index.refresh()

    async def follow(self) -> int:
        """Pull the registry's changes into the index: read off the event loop (see
        :meth:`registry_call`), applied on it. An unreachable registry is noted (see
        :class:`Reachability`), not raised, and its first answer again marks it reachable."""
        try:
            revision, changed = await self.registry_call(self.store.licenses_since, self.index.revision)
        except RegistryUnavailable as exc:
            self.registry.failed(exc)
            return 0
        self.registry.succeeded()
        return self.index.apply(revision, changed)

    async def registry_call(self, function, *args):
        """Call a blocking registry method: in a thread when the registry is across the network
        (PostgreSQL), so a database that does not answer never stalls the event loop; on the loop
        for SQLite, whose connection belongs to it."""
        if self.settings.registry_url:
            return await asyncio.to_thread(function, *args)
        return function(*args)

    def close(self) -> None:
        self.store.close()
        self.callers.close()


def _from_memory(check: Metered) -> Decision | None:
    """The "cached" mode's answer while the registry is unreachable: a check that takes no seat and
    no quota unit decided from this host's copy of the license (alert REGISTRY_DEGRADED); None
    for one that must, which is refused 503."""
    if check.meter.seat_limit is not None or check.meter.quota is not None:
        return None
    return degraded(check.decide(Usage()))


def read_check(ex: Exchange, doc: object) -> CheckBody | None:
    """Parse one check body into the exchange; a malformed one is refused (400) and None returned.

    The refused body's readable fields still go to the exchange, so its audit record says what
    was asked.
    """
    try:
        body = parse_check(doc)
    except InvalidRequest as exc:
        note_asked(ex, doc)
        ex.refuse(Reason.INVALID_REQUEST, str(exc))
        return None
    # What note_asked would copy: a well-formed body's names are valid and at most 128 characters.
    ex.feature, ex.user_id, ex.product, ex.quantity = body.feature, body.user_id, body.product, body.quantity
    if body.request_id:
        ex.request_id = body.request_id
    return body


def note_asked(ex: Exchange, doc: object) -> None:
    """Copy the readable fields of a check body (well-formed or not) to the exchange, for its
    audit record: what was asked, even when the check is refused before it is read."""
    for name, value in lenient_fields(doc).items():
        setattr(ex, name, value)
