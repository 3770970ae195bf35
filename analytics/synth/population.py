"""Who the synthetic traffic is about: licenses (with the cohorts the reports must surface) and
callers (with the misbehaving ones the security report must surface).

Everything is a numpy array indexed by license number, so the traffic generator can look
attributes up for millions of rows at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

DAY_US = 86_400_000_000
TIERS = ("free", "pro", "enterprise")
TIER_SEATS = (3, 25, 0)  # 0 = unlimited, as in data/policy.toml
PRODUCTS = ("analytics-suite", "edge-cache", "billing-pro")
FEATURES = ("dashboard.view", "reports.basic", "reports.advanced", "dashboard.edit", "export", "api.calls")
FREE_FEATURES = 2  # the free tier is entitled to FEATURES[:2]

# Cohorts, in the order of COHORT_SHARE. "healthy" licenses are everything else.
HEALTHY, EXPIRING, EXPIRED, REVOKED, SUSPENDED, STALE, NEVER_USED = range(7)
COHORT_SHARE = (0.0, 0.04, 0.03, 0.03, 0.01, 0.04, 0.02)

# Callers: well-behaved services first, then the misbehaving ones by role.
GOOD_CALLERS = ("billing", "search", "reports-api", "exporter", "web-app", "mobile-bff", "notifier", "etl")
LEGACY, SCANNER, NOISY = "legacy-batch", "scanner", "bulk-sync"  # stale config, key prober, rate-limited
CALLERS = GOOD_CALLERS + (LEGACY, SCANNER, NOISY)


@dataclass(frozen=True)
class Population:
    license_id: np.ndarray  # str
    key_fp: np.ndarray  # str
    customer: np.ndarray  # str
    product: np.ndarray  # int index into PRODUCTS
    tier: np.ndarray  # int index into TIERS
    cohort: np.ndarray  # int cohort
    seats_limit: np.ndarray  # int, 0 = unlimited
    seats_held: np.ndarray  # int, seats in use at any time
    users: np.ndarray  # int, size of the license's user pool
    created_us: np.ndarray
    expires_us: np.ndarray  # -1 = perpetual
    changed_us: np.ndarray  # revoked / suspended at; else = created
    weight: np.ndarray  # share of traffic
    stale_after_us: int  # stale keys get no traffic from here on
    user_names: list[str]  # every license's user pool, back to back
    user_offset: np.ndarray  # where each license's pool starts in user_names

    def __len__(self) -> int:
        return len(self.license_id)


def _hex_ids(rng: np.random.Generator, n: int, nbytes: int) -> np.ndarray:
    return np.array([bytes(row).hex() for row in rng.integers(0, 256, (n, nbytes), dtype=np.uint8)])


def make_population(rng: np.random.Generator, n: int, start_us: int, end_us: int, skewed: bool = False) -> Population:
    """``skewed``: most licenses expire within 30 days of the end, and a few carry most of the
    traffic (the benchmark's second shape, against reports that scale with licenses)."""
    span = end_us - start_us
    cohort = np.zeros(n, dtype=np.int64)
    shares = np.maximum(1, np.round(np.array(COHORT_SHARE) * n)).astype(int)
    order = rng.permutation(n)
    at = 0
    for kind in range(1, len(COHORT_SHARE)):
        cohort[order[at:at + shares[kind]]] = kind
        at += shares[kind]

    tier = rng.choice(len(TIERS), n, p=(0.35, 0.5, 0.15))
    seats_limit = np.array(TIER_SEATS)[tier]
    users = np.where(seats_limit > 0, seats_limit + rng.integers(0, 3, n), rng.integers(20, 200, n))
    seats_held = np.where(seats_limit > 0, np.minimum(seats_limit, (users * rng.uniform(0.4, 1.0, n)).astype(int) + 1), 0)

    created = start_us - rng.integers(30, 700, n) * DAY_US
    expires = end_us + rng.integers(45, 720, n) * DAY_US + rng.integers(0, DAY_US, n)
    expires = np.where((tier == 2) & (rng.random(n) < 0.4), -1, expires)  # perpetual enterprise deals
    expires = np.where(cohort == EXPIRING, end_us + rng.integers(DAY_US, 28 * DAY_US, n), expires)
    if skewed:
        expires = np.where(rng.random(n) < 0.7, end_us + rng.integers(DAY_US // 24, 30 * DAY_US, n), expires)
    expires = np.where(cohort == EXPIRED, end_us - rng.integers(DAY_US, max(2 * DAY_US, span * 6 // 10), n), expires)
    changed = np.where(cohort == REVOKED, start_us + (span * rng.uniform(0.2, 0.8, n)).astype(np.int64), created)
    changed = np.where(cohort == SUSPENDED, start_us - DAY_US, changed)

    weight = 1.0 / (rng.permutation(n) + 1.0) ** (1.6 if skewed else 0.8)  # a few big customers, a long tail
    weight = np.where(np.isin(cohort, (REVOKED, EXPIRED, SUSPENDED)), weight * 0.3, weight)
    weight = np.where(cohort == NEVER_USED, 0.0, weight)
    return Population(
        license_id=np.array([f"lic_{h[:20]}" for h in _hex_ids(rng, n, 10)]),
        key_fp=_hex_ids(rng, n, 8),
        customer=np.array([f"cust-{i % max(1, n * 2 // 3):04d}" for i in range(n)]),
        product=rng.integers(0, len(PRODUCTS), n),
        tier=tier,
        cohort=cohort,
        seats_limit=seats_limit,
        seats_held=seats_held,
        users=users,
        created_us=created,
        expires_us=expires,
        changed_us=changed,
        weight=weight / weight.sum(),
        stale_after_us=start_us + span // 4,
        user_names=[f"u-{i:05d}-{k:03d}" for i in range(n) for k in range(users[i])],
        user_offset=np.concatenate([[0], np.cumsum(users)[:-1]]),
    )


def _dt(us: int) -> datetime | None:
    return None if us < 0 else datetime.fromtimestamp(us / 1e6, tz=timezone.utc)


def license_rows(pop: Population) -> list[dict]:
    """The registry's view of the population, in the snapshot's row format."""
    status = np.where(pop.cohort == REVOKED, "revoked", np.where(pop.cohort == SUSPENDED, "suspended", "active"))
    return [
        {
            "license_id": pop.license_id[i],
            "key_fp": pop.key_fp[i],
            "customer": pop.customer[i],
            "product": PRODUCTS[pop.product[i]],
            "tier": TIERS[pop.tier[i]],
            "status": str(status[i]),
            "features": [],
            "seats_limit": None,
            "environments": ["*"],
            "starts_at": _dt(int(pop.created_us[i])),
            "expires_at": _dt(int(pop.expires_us[i])),
            "created_at": _dt(int(pop.created_us[i])),
            "updated_at": _dt(int(pop.changed_us[i])),
            "metadata": {"source": "synthetic"},
        }
        for i in range(len(pop))
    ]


def caller_rows() -> list[dict]:
    return [
        {
            "caller_id": name,
            "key_ids": [f"pk_{name.replace('-', '_')}_1"],
            "mtls_identities": [f"spiffe://corp/{name}"],
            "products": ["*"],
            "features": ["*"],
            "environments": ["*"],
            "admin": name == "billing",
            "rate_limit_rps": 50.0 if name == NOISY else 1000.0,
        }
        for name in CALLERS
    ]
