"""The decision engine: every licensing rule, as pure functions of their inputs.

No I/O, no clock, no globals: the adapters pass the license, policy, request, usage state and
the current time, and apply the returned effects (seat claim, quota consumption) atomically.
Checks run in the precedence of SPEC §4; the first failing check decides, and every alert
raised on the way is reported in ``alerts``.
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

from gateway.types import (
    Check, Decision, License, Metering, Outcome, Period, Policy, Quota, Reason, Status, Usage,
)

_DAY = timedelta(days=1)
_NO_METERING = Metering(seat_limit=None, seats_since=None, quota_key=None, quota=None, period_start=None, period_end=None)


def glob_match(pattern: str, name: str) -> bool:
    """Feature/product globs allow one trailing ``*`` (``reports.*``, ``*``)."""
    if pattern.endswith("*"):
        return name.startswith(pattern[:-1])
    return pattern == name


def any_match(patterns: tuple[str, ...] | list[str], name: str) -> bool:
    for pattern in patterns:
        if pattern == name or (pattern[-1:] == "*" and name.startswith(pattern[:-1])):
            return True
    return False


def _quota_for(lic: License, policy: Policy, feature: str) -> tuple[str, Quota] | tuple[None, None]:
    """The license's own quotas override the tier's; an exact name beats a glob."""
    tier = policy.tiers.get(lic.tier)
    for quotas in (lic.quotas, tier.quotas if tier else {}):
        if feature in quotas:
            return feature, quotas[feature]
        for key, quota in quotas.items():
            if glob_match(key, feature):
                return key, quota
    return None, None


def period_bounds(period: Period, now: datetime) -> tuple[datetime, datetime]:
    if period is Period.DAY:
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + _DAY
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


def metering(lic: License, policy: Policy, check: Check, now: datetime) -> Metering:
    """Which usage counters this check reads and may change (so the adapter can lock them)."""
    tier = policy.tiers.get(lic.tier)
    seat_limit = lic.seats if lic.seats is not None else (tier.seats if tier else None)
    key, quota = _quota_for(lic, policy, check.feature)
    if seat_limit is None and quota is None:
        return _NO_METERING
    start, end = period_bounds(quota.period, now) if quota else (None, None)
    since = None if seat_limit is None else now - timedelta(days=policy.seat_ttl_days)
    return Metering(seat_limit=seat_limit, seats_since=since, quota_key=key, quota=quota, period_start=start, period_end=end)


def status_refusal(lic: License, status: Status) -> str | None:
    """Why ``lic`` may not take ``status`` (by an admin here or from a bundle), else None.

    Revocation is final: a revoked key may have leaked, so no later word, local or the issuer's,
    makes it valid (or merely suspended) again; the customer gets a new license and key.
    """
    if lic.status is Status.REVOKED and status is not Status.REVOKED:
        return f"license {lic.license_id} is revoked, and revocation is final: issue a new license"
    return None


def _deny(reason: Reason, detail: str, alerts: list[Reason], **extra) -> Decision:
    return Decision(Outcome.DENY, reason, detail, tuple(alerts), **extra)


def decide(lic: License | None, policy: Policy, check: Check, usage: Usage, now: datetime,
           max_cache_ttl_s: int = 30, meter: Metering | None = None) -> Decision:
    """Decide one check. ``usage`` must have been read for ``meter = metering(lic, policy, check, now)``;
    pass ``meter`` when the caller already computed it (the hot path does)."""
    if lic is None:
        return _deny(Reason.KEY_NOT_FOUND, "no license matches this key", [])
    alerts: list[Reason] = []
    # Seconds until expiry (negative once expired): every expiry rule below is arithmetic on it.
    left_s = None if lic.expires_at is None else (lic.expires_at - now).total_seconds()
    days_left = None if left_s is None else math.floor(left_s / 86400)
    base = {"days_left": days_left}
    if lic.status is Status.REVOKED:
        return _deny(Reason.LICENSE_REVOKED, f"license {lic.license_id} has been revoked", alerts, **base)
    if lic.status is Status.SUSPENDED:
        return _deny(Reason.LICENSE_SUSPENDED, f"license {lic.license_id} is suspended", alerts, **base)
    if lic.starts_at is not None and now < lic.starts_at:
        return _deny(Reason.NOT_YET_VALID, f"license is valid from {_iso(lic.starts_at)}", alerts, **base)
    if not any_match(lic.environments, check.environment):
        return _deny(Reason.ENVIRONMENT_NOT_ALLOWED,
                     f"license is not valid in environment {check.environment!r}", alerts, **base)
    if left_s is not None and left_s <= 0:
        if left_s + policy.grace_days * 86400 <= 0:
            return _deny(Reason.LICENSE_EXPIRED, f"license expired on {_iso(lic.expires_at)}", alerts, **base)
        alerts.append(Reason.EXPIRED_IN_GRACE)
    if lic.tier not in policy.tiers:
        return _deny(Reason.FEATURE_NOT_ENTITLED, f"tier {lic.tier!r} is not in the policy", alerts, **base)
    if check.product is not None and check.product != lic.product:
        return _deny(Reason.FEATURE_NOT_ENTITLED, f"license is for product {lic.product!r}", alerts, **base)
    if not (any_match(policy.tiers[lic.tier].features, check.feature) or any_match(lic.features, check.feature)):
        return _deny(Reason.FEATURE_NOT_ENTITLED,
                     f"tier {lic.tier!r} does not include feature {check.feature!r}", alerts, **base)

    meter = meter or metering(lic, policy, check, now)
    if meter.seat_limit is not None and check.user_id is None:
        return _deny(Reason.INVALID_REQUEST, "user_id is required: this license has a seat limit", alerts, **base)
    seats = _seats(meter.seat_limit, usage, policy, alerts)
    if isinstance(seats, Decision):
        return _with(seats, **base)
    claim_seat, seats_used = seats
    quota = _quota(meter, usage, check.quantity, policy, alerts)
    if isinstance(quota, Decision):
        return _with(quota, days_left=days_left, seats_used=seats_used, seats_limit=meter.seat_limit)
    consume, quota_used = quota

    if left_s is not None and 0 < left_s <= policy.expiring_warn_days * 86400:
        alerts.append(Reason.EXPIRING_SOON)
    if meter.quota is None:
        quota_used = quota_limit = period_end = None
    else:
        quota_limit, period_end = meter.quota.limit, meter.period_end
        if quota_used * 100 >= quota_limit * policy.quota_warn_pct and Reason.QUOTA_OVERAGE not in alerts:
            alerts.append(Reason.QUOTA_NEAR_LIMIT)
    ttl = 0 if check.quantity else _cache_ttl(left_s, policy, max_cache_ttl_s)
    # Positional (a Decision is built on every check): the fields in Decision's order.
    if alerts:
        return Decision(Outcome.ALERT, alerts[0], _ALERT_DETAIL[alerts[0]], tuple(alerts), days_left, seats_used,
                        meter.seat_limit, quota_used, quota_limit, period_end, claim_seat, consume, ttl)
    return Decision(Outcome.ALLOW, Reason.VALID, "license is valid for this feature", (), days_left, seats_used,
                    meter.seat_limit, quota_used, quota_limit, period_end, claim_seat, consume, ttl)


def degraded(decision: Decision) -> Decision:
    """``decision`` made from this host's copy of the licenses while the shared registry cannot be
    reached (``registry_on_unavailable = "cached"``, SPEC §11): what it grants it grants with the
    alert ``REGISTRY_DEGRADED`` (a revocation made meanwhile elsewhere may be missed), and the
    caller may not cache it, since the next answer, from the registry, may differ."""
    if decision.outcome is Outcome.DENY:
        return decision
    alerts = decision.alerts + (Reason.REGISTRY_DEGRADED,)
    if decision.outcome is Outcome.ALLOW:
        return decision._replace(outcome=Outcome.ALERT, reason=Reason.REGISTRY_DEGRADED,
                                 detail=_ALERT_DETAIL[Reason.REGISTRY_DEGRADED], alerts=alerts, cache_ttl_s=0)
    return decision._replace(alerts=alerts, cache_ttl_s=0)


def _seats(limit: int | None, usage: Usage, policy: Policy, alerts: list[Reason]) -> Decision | tuple[bool, int]:
    if limit is None:
        return False, usage.seats_used
    if usage.holds_seat:  # no new seat; but while the license is over its limit, every check says so
        if usage.seats_used > limit:
            alerts.append(Reason.SEAT_OVERAGE)
        return False, usage.seats_used
    wanted = usage.seats_used + 1
    if wanted <= limit:
        return True, wanted
    if wanted <= math.floor(limit * (1 + policy.seat_overage_pct / 100)):
        alerts.append(Reason.SEAT_OVERAGE)
        return True, wanted
    return _deny(Reason.SEAT_LIMIT_EXCEEDED, f"all {limit} seats are in use", alerts,
                 seats_used=usage.seats_used, seats_limit=limit)


def _quota(meter: Metering, usage: Usage, quantity: int, policy: Policy,
           alerts: list[Reason]) -> Decision | tuple[int, int]:
    if meter.quota is None:
        return 0, 0
    limit = meter.quota.limit
    tolerated = math.floor(limit * (1 + policy.quota_overage_pct / 100))
    wanted = usage.quota_used + quantity
    # A pure check (quantity 0) is refused once nothing at all is left, tolerance included.
    if (wanted > tolerated) if quantity else (usage.quota_used >= tolerated):
        return _deny(Reason.QUOTA_EXCEEDED,
                     f"{meter.quota_key!r} quota of {limit} per {meter.quota.period} would be exceeded", alerts,
                     quota_used=usage.quota_used, quota_limit=limit, quota_period_end=meter.period_end)
    if wanted > limit:
        alerts.append(Reason.QUOTA_OVERAGE)
    return quantity, wanted


def _cache_ttl(left_s: float | None, policy: Policy, max_ttl: int) -> int:
    """A cached answer must not outlive the next moment the license changes state by itself:
    entering the expiry warning window, expiring, leaving the grace period."""
    ttl = max_ttl
    if left_s is not None:
        for edge in (left_s - policy.expiring_warn_days * 86400, left_s, left_s + policy.grace_days * 86400):
            if edge > 0:
                ttl = min(ttl, int(edge))
    return ttl


def _with(decision: Decision, **fields) -> Decision:
    """Fill the fields a nested check left unset (days_left, seats) from the outer context."""
    return decision._replace(**{k: v for k, v in fields.items() if getattr(decision, k) is None})


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


_ALERT_DETAIL = {
    Reason.EXPIRED_IN_GRACE: "license has expired and is in its grace period: renew it",
    Reason.SEAT_OVERAGE: "seat limit exceeded within the tolerated overage",
    Reason.QUOTA_OVERAGE: "quota exceeded within the tolerated overage",
    Reason.EXPIRING_SOON: "license expires soon: renew it",
    Reason.QUOTA_NEAR_LIMIT: "quota is nearly used up",
    Reason.REGISTRY_DEGRADED: "decided from this host's copy of the licenses: the shared registry cannot be reached",
}
