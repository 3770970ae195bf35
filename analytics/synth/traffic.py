"""One slice of synthetic audit history as an Arrow table in the exact AUDIT_SCHEMA, vectorised.

Rows are drawn by kind (ordinary checks, key probing, a stale unknown key, 401/403/429/400
refusals); ordinary checks then get the reason the engine would give for their license at that
moment (revoked, suspended, expired or in grace, not entitled, seat or quota limits, expiring
soon), applied from lowest to highest precedence so the first failing check wins, as in SPEC §4.
Strings are dictionary indices materialised with one ``take`` each: no per-row Python.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from gateway.audit.schema import AUDIT_SCHEMA

from .population import (
    CALLERS, DAY_US, EXPIRED, FEATURES, FREE_FEATURES, GOOD_CALLERS, LEGACY, NOISY, PRODUCTS, REVOKED,
    SCANNER, STALE, SUSPENDED, TIERS, Population,
)

NORMAL, PROBE, UNKNOWN_KEY, UNAUTHENTICATED, FORBIDDEN, RATE_LIMITED, INVALID = range(7)
KIND_SHARE = (0.968, 0.004, 0.002, 0.012, 0.004, 0.006, 0.004)
_REFUSALS = ((UNAUTHENTICATED, "UNAUTHENTICATED"), (FORBIDDEN, "CALLER_NOT_AUTHORIZED"),
             (RATE_LIMITED, "RATE_LIMITED"), (INVALID, "INVALID_REQUEST"))

# reason -> (decision, http status, error detail); a reason's code is its position here.
REASONS = {
    "VALID": ("allow", 200, None),
    "EXPIRING_SOON": ("alert", 200, None),
    "QUOTA_NEAR_LIMIT": ("alert", 200, None),
    "QUOTA_EXCEEDED": ("deny", 200, None),
    "SEAT_OVERAGE": ("alert", 200, None),
    "SEAT_LIMIT_EXCEEDED": ("deny", 200, None),
    "FEATURE_NOT_ENTITLED": ("deny", 200, None),
    "EXPIRED_IN_GRACE": ("alert", 200, None),
    "LICENSE_EXPIRED": ("deny", 200, None),
    "LICENSE_SUSPENDED": ("deny", 200, None),
    "LICENSE_REVOKED": ("deny", 200, None),
    "KEY_NOT_FOUND": ("deny", 200, None),
    "RATE_LIMITED": ("deny", 429, "rate limit exceeded"),
    "CALLER_NOT_AUTHORIZED": ("deny", 403, "caller scope does not cover the request"),
    "UNAUTHENTICATED": ("deny", 401, "authentication failed"),
    "INVALID_REQUEST": ("deny", 400, "unknown field 'licence_key'"),
}
_CODE = {name: code for code, name in enumerate(REASONS)}
_DECISIONS = ("allow", "alert", "deny")
_DECISION_OF = np.array([_DECISIONS.index(d) for d, _, _ in REASONS.values()])
_STATUS_OF = np.array([s for _, s, _ in REASONS.values()], dtype=np.int16)

AUTH_ERRORS = ("bad_signature", "stale_timestamp", "unknown_key_id", "missing_credentials", "replayed_nonce")
_AUTH_ERROR_SHARE = (0.55, 0.2, 0.15, 0.07, 0.03)
BAD_ADDRS = ("203.0.113.7", "198.51.100.23", "192.0.2.99")  # the first one is the loud one
_BAD_ADDR_SHARE = (0.7, 0.2, 0.1)
STALE_UNKNOWN_FPS = ("deadbeef0badf00d", "0ddc0ffee0ddba11")  # keys of licenses deleted long ago
_ADDRS = [f"10.0.0.{i + 1}" for i in range(len(CALLERS))] + list(BAD_ADDRS)
GRACE_US = 7 * DAY_US
WARN_US = 30 * DAY_US
POLICY_VERSIONS = ("3f1a2b4c5d6e", "a1b2c3d4e5f6")
INSTANCES = ("gw-a-w0", "gw-b-w0", "gw-stg-w0")
_ENVIRONMENTS = ("prod", "prod", "staging")
_INSTANCE_SHARE = (0.48, 0.48, 0.04)
_TS = pa.timestamp("us", tz="UTC")
HOUR_US = 3_600_000_000
_HEX_PAIRS = np.frombuffer(b"".join(b"%02x" % i for i in range(256)), dtype=np.uint16)


def _strings(chars: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """(n, width) ASCII bytes -> StringArray without a Python loop."""
    n, width = chars.shape
    offsets = pa.py_buffer(np.arange(0, (n + 1) * width, width, dtype=np.int32))
    bitmap = None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.StringArray.from_buffers(n, offsets, pa.py_buffer(np.ascontiguousarray(chars)), bitmap)


def _hex(raw: np.ndarray) -> np.ndarray:
    """(n, k) bytes -> (n, 2k) lowercase hex digits, one table lookup per byte."""
    return _HEX_PAIRS[raw].view(np.uint8).reshape(raw.shape[0], raw.shape[1] * 2)


def uuid7(rng: np.random.Generator, ts_us: np.ndarray) -> pa.Array:
    """UUIDv7 strings whose 48-bit prefix is each row's millisecond timestamp."""
    raw = rng.integers(0, 256, (len(ts_us), 16), dtype=np.uint8)
    ms = (ts_us // 1000).astype(np.uint64)
    raw[:, :6] = ((ms[:, None] >> np.arange(40, -8, -8, dtype=np.uint64)) & 0xFF).astype(np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x70
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    digits = _hex(raw)
    out = np.full((len(ts_us), 36), ord("-"), dtype=np.uint8)
    for group, (start, stop) in enumerate(((0, 8), (8, 12), (12, 16), (16, 20), (20, 32))):
        out[:, start + group:stop + group] = digits[:, start:stop]
    return _strings(out)


def _take(values, index: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    """Strings from a vocabulary by index; ``null`` marks rows without a value."""
    vocabulary = values if isinstance(values, pa.Array) else pa.array(list(values), pa.string())
    return vocabulary.take(pa.array(np.asarray(index, dtype=np.int64), mask=null))


def load(hour_of_day):
    """How busy an hour of the (UTC) day is against the day's average (1.0): busier in the
    working day than at night, peaking at 1.8 at 14:00."""
    return 1.0 + 0.8 * np.sin((np.asarray(hour_of_day) - 8) / 24 * 2 * np.pi)


def arrivals(rng: np.random.Generator, start_us: int, hours: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """When (sorted) and on which gateway instance ``n`` requests arrive, following :func:`load`."""
    weights = load((start_us // HOUR_US + np.arange(hours)) % 24)
    counts = rng.multinomial(n, weights / weights.sum())
    starts = np.repeat(start_us + np.arange(hours, dtype=np.int64) * HOUR_US, counts)
    return np.sort(starts + rng.integers(0, HOUR_US, n)), rng.choice(len(INSTANCES), n, p=_INSTANCE_SHARE)


def traffic(rng: np.random.Generator, pop: Population, ts: np.ndarray, instance: np.ndarray,
            policy_switch_us: int) -> pa.Table:
    """Audit records made at ``ts`` by gateway ``INSTANCES[instance]``, in that order; the policy
    changed at ``policy_switch_us``."""
    n = len(ts)
    kind = rng.choice(len(KIND_SHARE), n, p=KIND_SHARE)
    licensed = kind == NORMAL  # the presented key matched a license
    probe = kind == PROBE
    keyed = licensed | probe | (kind == UNKNOWN_KEY)  # the request got as far as a key lookup
    unauth = kind == UNAUTHENTICATED

    lic = rng.choice(len(pop), n, p=pop.weight)
    live = pop.cohort != STALE
    gone = (pop.cohort[lic] == STALE) & (ts >= pop.stale_after_us)
    lic[gone] = rng.choice(np.flatnonzero(live), gone.sum(), p=pop.weight[live] / pop.weight[live].sum())
    feature = rng.choice(len(FEATURES), n, p=(0.3, 0.25, 0.15, 0.1, 0.1, 0.1))
    # services mostly ask free licenses for what free includes; a few try for more
    upsell = (pop.tier[lic] == TIERS.index("free")) & (feature >= FREE_FEATURES) & (rng.random(n) < 0.95)
    feature[upsell] = rng.integers(0, FREE_FEATURES, upsell.sum())
    reason = _engine_reasons(rng, pop, lic, feature, ts)
    reason[probe | (kind == UNKNOWN_KEY)] = _CODE["KEY_NOT_FOUND"]
    for k, name in _REFUSALS:
        reason[kind == k] = _CODE[name]
    decision = _DECISION_OF[reason]

    caller = (lic + rng.integers(0, 2, n)) % len(GOOD_CALLERS)
    caller[(pop.cohort[lic] == EXPIRED) & licensed & (rng.random(n) < 0.5)] = CALLERS.index(LEGACY)
    caller[probe] = CALLERS.index(SCANNER)
    caller[kind == UNKNOWN_KEY] = CALLERS.index(LEGACY)
    caller[kind == RATE_LIMITED] = CALLERS.index(NOISY)
    auth_error = rng.choice(len(AUTH_ERRORS), n, p=_AUTH_ERROR_SHARE)
    addr = np.where(unauth, len(CALLERS) + rng.choice(len(BAD_ADDRS), n, p=_BAD_ADDR_SHARE), caller)

    # key fingerprints: the license's, one of the stale unknown ones, or a fresh random probe
    probes = _strings(_hex(rng.integers(0, 256, (probe.sum(), 8), dtype=np.uint8)))
    fps = pa.concat_arrays([pa.array(pop.key_fp), pa.array(STALE_UNKNOWN_FPS), probes])
    fp_index = np.where(licensed, lic, len(pop) + rng.integers(0, len(STALE_UNKNOWN_FPS), n))
    fp_index[probe] = len(pop) + len(STALE_UNKNOWN_FPS) + np.arange(probe.sum())
    user = pop.user_offset[lic] + rng.integers(0, 1 << 30, n) % pop.users[lic]

    alerting = decision == _DECISIONS.index("alert")
    limited = licensed & (pop.seats_limit[lic] > 0)
    metered = licensed & (feature == FEATURES.index("export")) & (pop.tier[lic] == TIERS.index("pro"))
    latency = rng.lognormal(np.log(260), 0.45, n) * np.where(rng.random(n) < 0.01, 8.0, 1.0)
    decision_id = uuid7(rng, ts)
    columns = {
        "ts": pa.array(ts, _TS),
        "decision_id": decision_id,
        "request_id": decision_id,
        "instance": _take(INSTANCES, instance),
        "environment": _take(_ENVIRONMENTS, instance),
        "caller_id": _take(CALLERS, caller, null=unauth),
        "auth_method": _take(("hmac", "none"), unauth & (auth_error == AUTH_ERRORS.index("missing_credentials"))),
        "auth_error": _take(AUTH_ERRORS, auth_error, null=~unauth),
        "remote_addr": _take(_ADDRS, addr),
        "endpoint": _take(("check", "batch"), licensed & (rng.random(n) < 0.25)),
        "http_status": pa.array(_STATUS_OF[reason]),
        "decision": _take(_DECISIONS, decision),
        "reason": _take(REASONS, reason),
        "alerts": pa.ListArray.from_arrays(np.concatenate([[0], np.cumsum(alerting)]).astype(np.int32),
                                           _take(REASONS, reason[alerting])),
        "license_id": _take(pop.license_id, lic, null=~licensed),
        "key_fp": _take(fps, fp_index, null=~keyed),
        "customer": _take(pop.customer, lic, null=~licensed),
        "product": _take(PRODUCTS, pop.product[lic], null=~licensed),
        "tier": _take(TIERS, pop.tier[lic], null=~licensed),
        "user_id": _take(pop.user_names, user, null=~keyed),
        "feature": _take(FEATURES, feature, null=~keyed & (kind != FORBIDDEN)),
        "quantity": pa.array(np.where(metered, rng.integers(1, 5, n), 0)),
        "seats_used": pa.array(pop.seats_held[lic].astype(np.int32), mask=~limited),
        "seats_limit": pa.array(pop.seats_limit[lic].astype(np.int32), mask=~limited),
        "quota_used": pa.array(rng.integers(0, 1000, n), mask=~metered),
        "quota_limit": pa.array(np.full(n, 1000), mask=~metered),
        "expires_at": pa.array(pop.expires_us[lic], _TS, mask=~licensed | (pop.expires_us[lic] < 0)),
        "policy_version": _take(POLICY_VERSIONS, ts >= policy_switch_us),
        "latency_us": pa.array(latency.astype(np.int32)),
        "trace_id": _strings(_hex(rng.integers(0, 256, (n, 16), dtype=np.uint8)), valid=rng.random(n) < 0.3),
        "error": _take([detail for _, _, detail in REASONS.values()], reason),
    }
    return pa.Table.from_pydict(columns, schema=AUDIT_SCHEMA)


def _engine_reasons(rng: np.random.Generator, pop: Population, lic: np.ndarray, feature: np.ndarray,
                    ts: np.ndarray) -> np.ndarray:
    """The engine's reason for an ordinary check; later rules take precedence over earlier ones."""
    expires = pop.expires_us[lic]
    dated = expires >= 0
    seat_limited = pop.seats_limit[lic] > 0
    export = feature == FEATURES.index("export")
    cohort = pop.cohort[lic]
    roll = rng.random(len(lic))
    reason = np.full(len(lic), _CODE["VALID"])
    rules = (
        ("EXPIRING_SOON", dated & (expires - ts < WARN_US)),
        ("QUOTA_NEAR_LIMIT", export & (roll < 0.02)),
        ("QUOTA_EXCEEDED", export & (roll < 0.004)),
        ("SEAT_OVERAGE", seat_limited & (roll > 0.995)),
        ("SEAT_LIMIT_EXCEEDED", seat_limited & (roll > 0.998)),
        ("FEATURE_NOT_ENTITLED", (pop.tier[lic] == TIERS.index("free")) & (feature >= FREE_FEATURES)),
        ("EXPIRED_IN_GRACE", dated & (ts >= expires)),
        ("LICENSE_EXPIRED", dated & (ts >= expires + GRACE_US)),
        ("LICENSE_SUSPENDED", (cohort == SUSPENDED) & (ts >= pop.changed_us[lic])),
        ("LICENSE_REVOKED", (cohort == REVOKED) & (ts >= pop.changed_us[lic])),
    )
    for name, when in rules:
        reason[when] = _CODE[name]
    return reason
