"""Signed webhook notifications: licenses entering the expiry window, suspected breach attempts.

Wire format. ``POST <webhooks_url>`` with a JSON body and::

    X-Portcullis-Event:     license.expiring | breach.suspected
    X-Portcullis-Delivery:  the notification id (the same on every retry: receivers dedupe on it)
    X-Portcullis-Timestamp: Unix time in whole seconds of this attempt
    X-Portcullis-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>

The secret is the UTF-8 text of ``webhooks_secret_file`` (created with mode 0600 on first use);
the receiver checks the signature with :func:`verify` (or its equivalent) and refuses stale
timestamps. Bodies name licenses, callers and addresses, never a key or a secret.

Delivery. Each notification is delivered by its own task: an answer other than 2xx, or none
within 10 s, is retried after ``webhooks_backoff_s``, doubling, up to ``webhooks_attempts``
attempts. Every attempt leaves an audit record (endpoint ``webhook.deliver``, decision
``alert``, the notification's reason code, the receiver's HTTP status or 0, the error if any,
``request_id`` = the notification id). Notifications still being retried at shutdown are lost.

Once, not once per worker. Every worker scans its index for licenses entering the policy's
``expiring_warn_days`` window and counts authentication failures (per remote address) and
``KEY_NOT_FOUND`` answers (per caller); counts are added up over all workers per minute in the
shared signals, and a notification is sent by whichever worker first *claims* it there.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Sequence

import aiohttp
from uuid_utils import uuid7

from gateway import logs
from gateway.audit import AuditSink, AuditUnavailable
from gateway.config import Settings
from gateway.exchange import Exchange
from gateway.keyfiles import write_private
from gateway.licenses import iso
from gateway.metrics import Metrics
from gateway.port import Port
from gateway.registry import RegistryUnavailable
from gateway.registry.signals import Signals
from gateway.types import Decision, License, Outcome, Reason, Status

log = logging.getLogger("portcullis.webhooks")
EXPIRY_SCAN_S = 60.0
WINDOW_S = 60
TIMEOUT_S = 10.0


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: bytes, timestamp: str, body: bytes, header: str, now: float, tolerance_s: int = 300) -> bool:
    """What a receiver checks: a fresh timestamp and a matching signature (constant-time)."""
    try:
        fresh = abs(now - int(timestamp)) <= tolerance_s
    except ValueError:
        return False
    return fresh and hmac.compare_digest(signature(secret, timestamp, body), header)


def webhook_secret(path: Path) -> bytes:
    """The signing secret, created (mode 0600) on first use.

    Workers start together: each writes a candidate under its own name and links it into place,
    which fails if another got there first, so all of them end up signing with the same secret.
    """
    if not path.exists():
        candidate = path.with_name(f"{path.name}.{os.getpid()}.new")
        write_private(candidate, ("whsec_" + secrets.token_urlsafe(32)).encode())
        try:
            os.link(candidate, path)
        except FileExistsError:
            pass
        finally:
            candidate.unlink()
    secret = path.read_text(encoding="utf-8").strip()
    logs.protect(secret)
    return secret.encode("utf-8")


@dataclass(frozen=True)
class Notice:
    event: str
    reason: Reason
    data: dict[str, Any]
    license: License | None = None
    caller_id: str | None = None
    remote_addr: str = ""
    id: str = field(default_factory=lambda: str(uuid7()))


class BreachWatch:
    """Counts failures per subject between flushes; the totals are kept across workers."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self._counts: dict[str, int] = {}

    def observe(self, exchanges: Sequence[Exchange]) -> None:
        for ex in exchanges:
            if ex.auth_error is not None:
                subject = "addr:" + ex.remote_addr
            elif ex.decision.reason is Reason.KEY_NOT_FOUND and ex.caller_id is not None:
                subject = "caller:" + ex.caller_id
            else:
                continue
            self._counts[subject] = self._counts.get(subject, 0) + 1

    def take(self) -> dict[str, int]:
        """The failures counted since the last take (on the event loop, where they are counted)."""
        counts, self._counts = self._counts, {}
        return counts

    def give_back(self, counts: dict[str, int]) -> None:
        """Counts whose tally failed (the registry out of reach): counted again with the next."""
        for subject, n in counts.items():
            self._counts[subject] = self._counts.get(subject, 0) + n

    @staticmethod
    def breaches(signals: Signals, counts: dict[str, int], threshold: int, now: float) -> list[Notice]:
        """Tally ``counts`` with every worker's and host's; a notice for each subject that crossed
        ``threshold`` in this window and that this call is the first to claim. Blocking: with
        several hosts both are round trips to PostgreSQL, so the notifier runs it in a thread."""
        window = int(now // WINDOW_S)
        totals = signals.tally(window, counts)
        over = {f"breach:{s}:{window}": (s, n) for s, n in totals.items() if n >= threshold}
        return [_breach(*over[key], window, threshold) for key in signals.claim(over)]


def _breach(subject: str, count: int, window: int, threshold: int) -> Notice:
    kind, _, who = subject.partition(":")
    started = datetime.fromtimestamp(window * WINDOW_S, timezone.utc)
    data = {"count_at_least": count, "threshold": threshold, "window_start": iso(started), "window_s": WINDOW_S}
    if kind == "addr":
        return Notice("breach.suspected", Reason.UNAUTHENTICATED, data | {
            "kind": "authentication_failures", "remote_addr": who}, remote_addr=who)
    return Notice("breach.suspected", Reason.KEY_NOT_FOUND, data | {"kind": "key_probing", "caller_id": who},
                  caller_id=who)


class Notifier:
    def __init__(self, settings: Settings, port: Port, signals: Signals, sink: AuditSink, instance: str,
                 metrics: Metrics) -> None:
        self.settings, self.port, self.signals, self.sink = settings, port, signals, sink
        self.instance, self.metrics = instance, metrics
        self.secret = webhook_secret(settings.webhooks_secret_path)
        self.watch = BreachWatch(settings.webhooks_breach_threshold)
        self.observe = self.watch.observe
        self._claimed: set[str] = set()
        self._deliveries: set[asyncio.Task] = set()

    async def run(self) -> None:
        """Scan, tally and deliver until cancelled (a background task of the app)."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as session:
            scanned = float("-inf")
            try:
                while True:
                    now = time.time()
                    notices = await self._breaches(now)
                    if now - scanned >= EXPIRY_SCAN_S:
                        notices += await self._expiring(datetime.fromtimestamp(now, timezone.utc))
                        scanned = now
                    for notice in notices:
                        task = asyncio.create_task(self._deliver(session, notice))
                        self._deliveries.add(task)
                        task.add_done_callback(self._deliveries.discard)
                    await asyncio.sleep(1.0)
            finally:
                for task in list(self._deliveries):
                    task.cancel()
                await asyncio.gather(*self._deliveries, return_exceptions=True)

    async def _breaches(self, now: float) -> list[Notice]:
        counts = self.watch.take()
        try:
            return await self.port.registry_call(self.watch.breaches, self.signals, counts,
                                                 self.watch.threshold, now)
        except RegistryUnavailable as exc:  # retried with the next second's counts
            self.watch.give_back(counts)
            self.port.registry.failed(exc)
            return []

    async def _expiring(self, now: datetime) -> list[Notice]:
        horizon = now + timedelta(days=self.port.policy.expiring_warn_days)
        due = {f"expiring:{lic.license_id}:{int(lic.expires_at.timestamp())}": lic
               for lic in self.port.index.by_id.values()
               if lic.status is not Status.REVOKED and lic.expires_at is not None and now < lic.expires_at <= horizon}
        fresh = [key for key in due if key not in self._claimed]
        try:
            claimed = await self.port.registry_call(self.signals.claim, fresh)
        except RegistryUnavailable as exc:  # claimed at the next scan
            self.port.registry.failed(exc)
            return []
        self._claimed.update(fresh)
        return [_expiring(due[key], now) for key in claimed]

    async def _deliver(self, session: aiohttp.ClientSession, notice: Notice) -> None:
        body = json.dumps({"id": notice.id, "event": notice.event, "created_at": iso(datetime.now(timezone.utc)),
                           "environment": self.settings.environment, "instance": self.instance, **notice.data},
                          separators=(",", ":")).encode()
        delay = self.settings.webhooks_backoff_s
        for attempt in range(1, self.settings.webhooks_attempts + 1):
            timestamp = str(int(time.time()))
            headers = {"Content-Type": "application/json", "X-Portcullis-Event": notice.event,
                       "X-Portcullis-Delivery": notice.id, "X-Portcullis-Timestamp": timestamp,
                       "X-Portcullis-Signature": signature(self.secret, timestamp, body)}
            ex = self.port.open("webhook.deliver", instance=self.instance, now=datetime.now(timezone.utc),
                                remote_addr=notice.remote_addr, request_id=notice.id)
            status, error = 0, None
            try:
                async with session.post(self.settings.webhooks_url, data=body, headers=headers) as response:
                    status = response.status
                    error = None if 200 <= status < 300 else f"receiver answered {status}"
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                error = f"receiver unreachable: {type(exc).__name__}"
            await self._audit(ex, notice, attempt, status, error)
            if error is None:
                self.metrics.delivery("delivered")
                return
            self.metrics.delivery("failed")
            if attempt < self.settings.webhooks_attempts:
                await asyncio.sleep(delay)
                delay *= 2
        self.metrics.delivery("gave_up")
        log.error("webhook given up", extra={"event": "webhook_gave_up", "request_id": notice.id,
                                             "webhook_event": notice.event})

    async def _audit(self, ex: Exchange, notice: Notice, attempt: int, status: int, error: str | None) -> None:
        ex.caller_id = notice.caller_id
        ex.decide(notice.license, Decision(Outcome.ALERT, notice.reason, f"{notice.event}, attempt {attempt}",
                                           alerts=(notice.reason,)))
        ex.http_status, ex.error = status, error
        ex.decided_ns = ex.received_ns
        try:
            await self.sink.submit([ex.record()])
        except AuditUnavailable as exc:
            log.error("webhook attempt not audited", extra={"event": "audit_unavailable", "error": str(exc)})


def _expiring(lic: License, now: datetime) -> Notice:
    return Notice("license.expiring", Reason.EXPIRING_SOON, {"license": {
        "id": lic.license_id, "customer": lic.customer, "product": lic.product, "tier": lic.tier,
        "status": lic.status.value, "expires_at": iso(lic.expires_at),
        "days_left": (lic.expires_at - now).days}}, license=lic)
