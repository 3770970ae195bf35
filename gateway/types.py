"""The licensing model's vocabulary: frozen value types shared by the engine and its adapters.

Times are timezone-aware UTC datetimes. Nothing here does I/O. The types built on every request
(Check, Usage, Metering, Decision), and License, of which the registry holds 100,000 and more, are NamedTuples rather than frozen dataclasses: equally
immutable, and several times cheaper to construct, which the 20 µs decision budget needs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Mapping, NamedTuple


class Outcome(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    ALERT = "alert"


class Reason(StrEnum):
    """Reason codes of SPEC §4, in the order the checks run."""

    INVALID_REQUEST = "INVALID_REQUEST"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    CALLER_NOT_AUTHORIZED = "CALLER_NOT_AUTHORIZED"
    RATE_LIMITED = "RATE_LIMITED"
    KEY_NOT_FOUND = "KEY_NOT_FOUND"
    LICENSE_REVOKED = "LICENSE_REVOKED"
    LICENSE_SUSPENDED = "LICENSE_SUSPENDED"
    NOT_YET_VALID = "NOT_YET_VALID"
    ENVIRONMENT_NOT_ALLOWED = "ENVIRONMENT_NOT_ALLOWED"
    LICENSE_EXPIRED = "LICENSE_EXPIRED"
    EXPIRED_IN_GRACE = "EXPIRED_IN_GRACE"
    FEATURE_NOT_ENTITLED = "FEATURE_NOT_ENTITLED"
    SEAT_LIMIT_EXCEEDED = "SEAT_LIMIT_EXCEEDED"
    SEAT_OVERAGE = "SEAT_OVERAGE"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    QUOTA_OVERAGE = "QUOTA_OVERAGE"
    EXPIRING_SOON = "EXPIRING_SOON"
    QUOTA_NEAR_LIMIT = "QUOTA_NEAR_LIMIT"
    REGISTRY_DEGRADED = "REGISTRY_DEGRADED"  # alert: decided from memory, the shared registry unreachable
    VALID = "VALID"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    AUDIT_UNAVAILABLE = "AUDIT_UNAVAILABLE"
    REGISTRY_UNAVAILABLE = "REGISTRY_UNAVAILABLE"  # the shared registry (PostgreSQL) cannot be reached
    INTERNAL_ERROR = "INTERNAL_ERROR"


class Status(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


class Period(StrEnum):
    DAY = "day"
    MONTH = "month"


@dataclass(frozen=True, slots=True)
class Quota:
    limit: int
    period: Period


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    features: tuple[str, ...]
    seats: int | None = None  # None: no seat limit
    quotas: Mapping[str, Quota] = field(default_factory=dict)  # feature glob -> quota


@dataclass(frozen=True, slots=True)
class Policy:
    tiers: Mapping[str, Tier]
    version: str
    expiring_warn_days: int = 30
    grace_days: int = 0
    seat_ttl_days: int = 30
    seat_overage_pct: float = 0.0
    quota_overage_pct: float = 0.0
    quota_warn_pct: float = 80.0


class License(NamedTuple):
    license_id: str
    key_hash: str  # hex SHA-256 of the key; the key itself is never stored
    customer: str
    product: str
    tier: str
    status: Status = Status.ACTIVE
    features: tuple[str, ...] = ()  # granted beyond the tier
    seats: int | None = None  # overrides the tier's seat limit when set
    quotas: Mapping[str, Quota] = MappingProxyType({})  # override the tier's quotas
    starts_at: datetime | None = None
    expires_at: datetime | None = None  # None: perpetual
    environments: tuple[str, ...] = ("*",)
    metadata: Mapping[str, str] = MappingProxyType({})


class Check(NamedTuple):
    """What the caller asks, minus the key (the adapter resolves the key to a license)."""

    feature: str
    environment: str
    user_id: str | None = None
    product: str | None = None
    quantity: int = 0


class Usage(NamedTuple):
    """Usage state read atomically with the decision (seats and the applicable quota)."""

    seats_used: int = 0  # users holding a seat now
    holds_seat: bool = False  # whether this user already holds one
    quota_used: int = 0  # units consumed in the current period


class Metering(NamedTuple):
    """Which usage counters a check touches: derived from license + policy before reading usage."""

    seat_limit: int | None
    seats_since: datetime | None  # a seat is held by users seen at or after this moment
    quota_key: str | None
    quota: Quota | None
    period_start: datetime | None
    period_end: datetime | None


class Decision(NamedTuple):
    """The engine's answer and the usage effects to apply atomically when it is not a deny."""

    outcome: Outcome
    reason: Reason
    detail: str
    alerts: tuple[Reason, ...] = ()
    days_left: int | None = None
    seats_used: int | None = None
    seats_limit: int | None = None
    quota_used: int | None = None
    quota_limit: int | None = None
    quota_period_end: datetime | None = None
    claim_seat: bool = False
    consume: int = 0
    cache_ttl_s: int = 0
