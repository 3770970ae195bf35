"""One decision's facts, and their two projections: the caller's answer and the audit record.

Both views are built from the same object so that what a caller was told and what the trail says
can never disagree. Building them is pure (no I/O); the key itself is never stored here, only its
fingerprint.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, partial
from datetime import datetime
from typing import Any

from gateway.audit import AuditRecord
from gateway.licenses import iso, to_us
from gateway.types import Decision, License, Outcome, Reason

HTTP_STATUS = {
    Reason.INVALID_REQUEST: 400, Reason.UNAUTHENTICATED: 401, Reason.CALLER_NOT_AUTHORIZED: 403,
    Reason.RATE_LIMITED: 429, Reason.PAYLOAD_TOO_LARGE: 413, Reason.AUDIT_UNAVAILABLE: 503,
    Reason.REGISTRY_UNAVAILABLE: 503, Reason.INTERNAL_ERROR: 500,
}
_ERROR_DETAIL = {
    Reason.UNAUTHENTICATED: "the request is not authenticated",  # one text whatever the cause: no oracle
    Reason.RATE_LIMITED: "too many requests: slow down",
    Reason.AUDIT_UNAVAILABLE: "the decision could not be recorded, so it is refused",
    Reason.REGISTRY_UNAVAILABLE: "the shared registry cannot be reached, so the decision is refused",
    Reason.INTERNAL_ERROR: "internal error: the request was refused",
}


@dataclass(slots=True)
class Exchange:
    decision_id: str
    request_id: str
    now: datetime
    received_ns: int
    instance: str
    environment: str
    remote_addr: str
    endpoint: str
    policy_version: str
    auth_method: str = "none"
    caller_id: str | None = None
    auth_error: str | None = None
    trace_id: str | None = None
    feature: str | None = None
    user_id: str | None = None
    product: str | None = None
    quantity: int = 0
    key_fp: str | None = None
    license: License | None = None
    about: License | None = None  # the license a refusal concerns: in the audit record, never in the answer
    decision: Decision | None = None
    http_status: int = 200
    error: str | None = None
    decided_ns: int = 0
    extra: dict[str, Any] | None = None  # endpoint-specific answer fields

    def refuse(self, reason: Reason, detail: str | None = None, status: int | None = None,
               about: License | None = None) -> Exchange:
        """Record a transport-level refusal (400/401/403/413/415/429/500/503).

        ``about`` is the license the refusal concerns, if any: analysts see it in the audit
        record; the refused caller is told nothing about it.
        """
        text = _ERROR_DETAIL.get(reason) or detail or reason.value
        self.about = about
        self.decision = Decision(Outcome.DENY, reason, text)
        self.http_status = status or HTTP_STATUS[reason]
        self.error = detail or text
        return self

    def decide(self, lic: License | None, decision: Decision) -> Exchange:
        self.license, self.decision = lic, decision
        self.http_status = HTTP_STATUS.get(decision.reason, 200)
        if self.http_status >= 400:
            self.error = decision.detail
        return self

    def answer(self, status: bool = False) -> dict[str, Any]:
        """The response body of SPEC §4 (the same shape for errors); with ``status``, also the
        HTTP status (each result of a batch carries its own)."""
        d, lic = self.decision, self.license
        # The enum members are strs (StrEnum): orjson writes them as their values.
        body: dict[str, Any] = {
            "decision": d.outcome, "reason": d.reason, "detail": d.detail,
            "decision_id": self.decision_id, "request_id": self.request_id, "feature": self.feature,
            "license": None, "alerts": list(d.alerts), "seats": None, "quota": None,
            "policy_version": self.policy_version, "cache_ttl_s": d.cache_ttl_s,
        }
        if lic is not None:
            body["license"] = {"id": lic.license_id, "customer": lic.customer, "tier": lic.tier,
                               "status": lic.status, "expires_at": iso(lic.expires_at),
                               "days_left": d.days_left}
        if d.seats_limit is not None or d.seats_used is not None:
            body["seats"] = {"used": d.seats_used, "limit": d.seats_limit}
        if d.quota_limit is not None:
            body["quota"] = {"used": d.quota_used, "limit": d.quota_limit, "period_end": iso(d.quota_period_end)}
        if self.extra:
            body.update(self.extra)
        if status:
            body["status"] = self.http_status
        return body

    def record(self) -> AuditRecord:
        """The audit record of SPEC §5 (timestamps as integer microseconds, UTC).

        Built positionally (keyword arguments cost a namedtuple twice as much): the values are
        in :data:`RECORD_ORDER`, which the import checks against the schema."""
        d, lic = self.decision, self.license or self.about
        latency = max(0, (self.decided_ns - self.received_ns) // 1000) if self.decided_ns else 0
        if lic is None:
            license_id = customer = tier = expires_us = None
            product = self.product
        else:
            license_id, customer, product, tier = lic.license_id, lic.customer, lic.product, lic.tier
            expires_us = _expiry_us(lic.expires_at) if lic.expires_at else None
        return _new_record((
            to_us(self.now), self.decision_id, self.request_id, self.instance, self.environment, self.caller_id,
            self.auth_method, self.auth_error, self.remote_addr, self.endpoint, self.http_status,
            d.outcome.value, d.reason.value, [a.value for a in d.alerts] if d.alerts else [],
            license_id, self.key_fp, customer, product, tier, self.user_id, self.feature, self.quantity,
            d.seats_used, d.seats_limit, d.quota_used, d.quota_limit, expires_us,
            self.policy_version, min(latency, 2**31 - 1), self.trace_id, self.error,
        ))


RECORD_ORDER = (
    "ts", "decision_id", "request_id", "instance", "environment", "caller_id",
    "auth_method", "auth_error", "remote_addr", "endpoint", "http_status",
    "decision", "reason", "alerts",
    "license_id", "key_fp", "customer", "product", "tier", "user_id", "feature", "quantity",
    "seats_used", "seats_limit", "quota_used", "quota_limit", "expires_at",
    "policy_version", "latency_us", "trace_id", "error",
)
if RECORD_ORDER != AuditRecord._fields:  # a column added to the schema must be added above too
    raise ImportError("Exchange.record does not list the audit schema's columns in order")
_new_record = partial(tuple.__new__, AuditRecord)
_expiry_us = lru_cache(maxsize=8192)(to_us)  # the same few expiry moments, over and over
