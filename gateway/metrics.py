"""Prometheus metrics of one gateway, correct across the worker processes of one ``serve``.

Across workers. ``portcullis serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` (``<data>/run/metrics``,
emptied at start) before it forks any worker, so prometheus-client keeps every worker's values in
that worker's own mmap'd files and a scrape, whichever worker answers it, merges them all.
Counters of a worker that died stay counted (totals never go backwards); its live gauges go when
the master reaps it. Without the variable (tests, an embedded app) the same metrics live in a
private in-process registry.

Three kinds of source:

- per request, :meth:`Metrics.observe` (called by ``Gate.finish``) only adds to plain integers of
  this process: a prometheus-client increment costs several microseconds (a lock, and an mmap
  write across workers), ten times a dict update, and a batch of 100 checks would pay it 100 times;
- per second, and before every scrape, :meth:`Metrics.sample` folds those integers into
  prometheus-client's values (so other workers' figures are at most a second old), and copies
  what the worker's audit sink counts, as deltas;
- per scrape, the registry's state (licenses by status, expiring soon): the same in every worker,
  so the answering worker computes it from its own index.
"""
from __future__ import annotations

import os
import time
from bisect import bisect_left
from datetime import datetime, timedelta, timezone
from typing import Iterator, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.exchange import Exchange
from gateway.port import Port
from gateway.types import Outcome, Reason, Status

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
        self._decided: dict[tuple[Outcome, Reason], int] = {}
        self._auth: dict[str, int] = {}
        self._unknown_keys: dict[str, int] = {}
        self._latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self._latency_sum = 0.0
        self._sampled = dict.fromkeys(_SINK_COUNTERS, 0)
        self._policy_version = ""
        self.sample(None)

    # -- per request (hot path) -----------------------------------------------------------
    def observe(self, exchanges: Sequence[Exchange]) -> None:
        first = exchanges[0]
        latency = (first.decided_ns - first.received_ns) / 1e9
        self._latency_counts[bisect_left(LATENCY_BUCKETS, latency)] += 1  # prometheus: le is "<="
        self._latency_sum += latency
        decided = self._decided
        for ex in exchanges:
            d = ex.decision
            key = (d.outcome, d.reason)
            decided[key] = decided.get(key, 0) + 1
            if ex.auth_error is not None:
                self._auth[ex.auth_error] = self._auth.get(ex.auth_error, 0) + 1
            elif d.reason is Reason.KEY_NOT_FOUND and ex.caller_id is not None:
                self._unknown_keys[ex.caller_id] = self._unknown_keys.get(ex.caller_id, 0) + 1

    def delivery(self, result: str) -> None:
        self._deliveries_total.labels(result).inc()

    # -- per second -----------------------------------------------------------------------
    def sample(self, sink: object | None, lost_elsewhere: int = 0) -> None:
        """Fold the per-request counts in; copy the sink's counters (deltas) and the policy version."""
        self._fold()
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

    def _fold(self) -> None:
        decided, self._decided = self._decided, {}
        for (outcome, reason), n in decided.items():
            self._decisions_total.labels(outcome.value, reason.value).inc(n)
        for metric, pending in ((self._auth_total, self._auth), (self._unknown_keys_total, self._unknown_keys)):
            for label, n in pending.items():
                metric.labels(label).inc(n)
            pending.clear()
        counts, self._latency_counts = self._latency_counts, [0] * len(self._latency_counts)
        # Histogram has no bulk observe: add to its per-bucket values (not cumulative: the
        # exposition sums them), as observe() itself does. tests/http/test_metrics.py guards it.
        for bucket, n in zip(self._latency._buckets, counts):
            if n:
                bucket.inc(n)
        if self._latency_sum:
            self._latency._sum.inc(self._latency_sum)
            self._latency_sum = 0.0

    # -- per scrape -----------------------------------------------------------------------
    def render(self) -> bytes:
        self._fold()  # this worker's latest; the others' are at most a second old
        if not multiprocess():
            return generate_latest(self._registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged)
        merged.register(self._registry_state)
        return generate_latest(merged)


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
