"""Prometheus metrics of one gateway, correct across the worker processes of one ``serve``.

Across workers. ``portcullis serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` (``<data>/run/metrics``,
emptied at start) before it forks any worker, so prometheus-client keeps every worker's values in
that worker's own mmap'd files and a scrape, whichever worker answers it, merges them all.
Counters of a worker that died stay counted (totals never go backwards); its live gauges go when
the master reaps it. Without the variable (tests, an embedded app) the same metrics live in a
private in-process registry.

Three kinds of source:

- per request, :meth:`Metrics.observe` (called by ``Gate.finish``): label children are bound once
  and cached, so a decision costs a dict lookup and one increment;
- per second, :meth:`Metrics.sample`: what the worker's audit sink counts, copied as deltas;
- per scrape, the registry's state (licenses by status, expiring soon): the same in every worker,
  so the answering worker computes it from its own index.
"""
from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.exchange import Exchange
from gateway.port import Port
from gateway.types import Reason, Status

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
EXPIRY_WINDOWS_DAYS = (7, 30)
# The audit sink's counters (attributes of DurableSink) and the counter each one feeds.
_SINK_COUNTERS = {
    "records_written": ("portcullis_audit_records", "Audit records written to the spool"),
    "bytes_written": ("portcullis_audit_bytes", "Bytes written to the audit spool"),
    "flush_seconds_total": ("portcullis_audit_flush_seconds", "Time spent writing and fsyncing the spool"),
    "failures": ("portcullis_audit_failures", "Audit spool writes that failed"),
    "lost_records": ("portcullis_audit_lost_records", "Audit records acknowledged but not made durable"),
}
CONTENT_TYPE = CONTENT_TYPE_LATEST


def multiprocess() -> bool:
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ


class Metrics:
    def __init__(self, port: Port) -> None:
        self._registry = CollectorRegistry()
        self._registry_state = _RegistryState(port)
        self._registry.register(self._registry_state)
        reg = self._registry
        self._decisions_total = Counter("portcullis_decisions", "Decisions by outcome and reason",
                                        ["decision", "reason"], registry=reg)
        self._latency = Histogram("portcullis_decision_latency_seconds",
                                  "From request received to decision made (one observation per request)",
                                  buckets=LATENCY_BUCKETS, registry=reg)
        self._auth_total = Counter("portcullis_auth_failures", "Failed authentications by cause", ["cause"],
                                   registry=reg)
        self._unknown_keys_total = Counter("portcullis_key_not_found", "KEY_NOT_FOUND answers by caller",
                                           ["caller_id"], registry=reg)
        self._sink_totals = {attr: Counter(name, doc, registry=reg) for attr, (name, doc) in _SINK_COUNTERS.items()}
        self._backlog = Gauge("portcullis_audit_backlog_segments", "Spool segments waiting for conversion",
                              registry=reg, multiprocess_mode="livesum")
        self._policy = Gauge("portcullis_policy_info", "Workers deciding under each policy version",
                             ["policy_version"], registry=reg, multiprocess_mode="livesum")
        self._deliveries_total = Counter("portcullis_webhook_deliveries", "Webhook delivery attempts by result",
                                         ["result"], registry=reg)
        self._port = port
        self._decisions: dict[tuple[Any, Any], Any] = {}
        self._auth: dict[str, Any] = {}
        self._unknown_keys: dict[str, Any] = {}
        self._sampled = dict.fromkeys(_SINK_COUNTERS, 0)
        self._policy_version = ""
        self.sample(None)

    # -- per request (hot path) -----------------------------------------------------------
    def observe(self, exchanges: Sequence[Exchange]) -> None:
        first = exchanges[0]
        self._latency.observe((first.decided_ns - first.received_ns) / 1e9)
        for ex in exchanges:
            d = ex.decision
            key = (d.outcome, d.reason)
            child = self._decisions.get(key)
            if child is None:
                child = self._decisions[key] = self._decisions_total.labels(d.outcome.value, d.reason.value)
            child.inc()
            if ex.auth_error is not None:
                _child(self._auth, self._auth_total, ex.auth_error).inc()
            elif d.reason is Reason.KEY_NOT_FOUND and ex.caller_id is not None:
                _child(self._unknown_keys, self._unknown_keys_total, ex.caller_id).inc()

    def delivery(self, result: str) -> None:
        self._deliveries_total.labels(result).inc()

    # -- per second -----------------------------------------------------------------------
    def sample(self, sink: object | None, lost_elsewhere: int = 0) -> None:
        """Copy the sink's counters (deltas) and this worker's policy version."""
        if sink is not None:
            for attr, counter in self._sink_totals.items():
                value = getattr(sink, attr, 0) + (lost_elsewhere if attr == "lost_records" else 0)
                if value > self._sampled[attr]:
                    counter.inc(value - self._sampled[attr])
                    self._sampled[attr] = value
            self._backlog.set(getattr(sink, "backlog", 0))
        version = self._port.policy.version
        if version != self._policy_version:
            if self._policy_version:
                self._policy.labels(self._policy_version).set(0)
            self._policy.labels(version).set(1)
            self._policy_version = version

    # -- per scrape -----------------------------------------------------------------------
    def render(self) -> bytes:
        if not multiprocess():
            return generate_latest(self._registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged)
        merged.register(self._registry_state)
        return generate_latest(merged)


def _child(cache: dict[str, Any], metric: Counter, label: str) -> Any:
    child = cache.get(label)
    if child is None:
        child = cache[label] = metric.labels(label)
    return child


class _RegistryState:
    """Licenses by status and expiring soon, from the worker's index; recomputed when the index
    changed or every 30 s (a scan of 100,000 licenses takes tens of milliseconds)."""

    MAX_AGE_S = 30.0

    def __init__(self, port: Port) -> None:
        self._port = port
        self._key: tuple[int, float] | None = None
        self._counts: tuple[dict[str, int], dict[int, int]] = ({}, {})

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        index = self._port.index
        if self._key is None or self._key[0] != index.revision or time.monotonic() - self._key[1] > self.MAX_AGE_S:
            self._counts = _count(index.by_id.values(), datetime.now(timezone.utc))
            self._key = (index.revision, time.monotonic())
        by_status, expiring = self._counts
        status = GaugeMetricFamily("portcullis_licenses", "Licenses in the registry by status", labels=["status"])
        for name in Status:
            status.add_metric([name.value], by_status.get(name.value, 0))
        yield status
        soon = GaugeMetricFamily("portcullis_licenses_expiring",
                                 "Licenses not revoked that expire within the window", labels=["within_days"])
        for days in EXPIRY_WINDOWS_DAYS:
            soon.add_metric([str(days)], expiring[days])
        yield soon


def _count(licenses, now: datetime) -> tuple[dict[str, int], dict[int, int]]:
    by_status: dict[str, int] = {}
    expiring = dict.fromkeys(EXPIRY_WINDOWS_DAYS, 0)
    horizons = {days: now + timedelta(days=days) for days in EXPIRY_WINDOWS_DAYS}
    for lic in licenses:
        by_status[lic.status.value] = by_status.get(lic.status.value, 0) + 1
        if lic.expires_at is not None and lic.status is not Status.REVOKED and lic.expires_at > now:
            for days, horizon in horizons.items():
                if lic.expires_at <= horizon:
                    expiring[days] += 1
    return by_status, expiring
