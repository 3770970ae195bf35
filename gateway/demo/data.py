"""The demo's data directory: a registry with licenses in every interesting state, callers (one of
them misbehaving) and 30 days of synthetic audit history, so every page has something to show.

The licenses and callers snapshots that analytics reads are the synthetic population merged with
the real registry, so the history and the live traffic describe one deployment. The demo's own
credentials (license keys, caller secrets) are kept in ``keys/demo.json`` (0600): a directory
prepared once is reused as it is on the next run.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

import pyarrow.parquet as pq

from analytics.synth import generate
from gateway import admin
from gateway.callers import Caller, add_caller
from gateway.cli.setup import initialise
from gateway.config import Settings
from gateway.keyfiles import write_private
from gateway.policy import load_policy
from gateway.registry import open_store
from gateway.snapshot import callers_path, licenses_path, write_callers_snapshot, write_licenses_snapshot
from gateway.types import Period, Quota, Status

PRODUCT = "analytics-suite"
# label -> (customer, tier, expires in days (None: perpetual), status, issue options)
LICENSES = {
    "healthy": ("stark-industries", "enterprise", 365, Status.ACTIVE, {}),
    "expiring": ("acme", "pro", 5, Status.ACTIVE, {}),
    "in_grace": ("globex", "pro", -3, Status.ACTIVE, {}),
    "expired": ("initech", "pro", -40, Status.ACTIVE, {}),
    "revoked": ("umbrella", "pro", 200, Status.REVOKED, {}),
    "near_quota": ("hooli", "pro", 120, Status.ACTIVE, {"quotas": {"export": Quota(200, Period.MONTH)}}),
    "seats_full": ("wayne-enterprises", "free", None, Status.ACTIVE, {}),
}
GOOD_CALLER, BAD_CALLER = "web-app", "scanner"  # names the synthetic history uses too
HISTORY_DAYS = 30


@dataclass(frozen=True)
class DemoState:
    keys: dict[str, str]  # license label -> key
    callers: dict[str, tuple[str, str]]  # caller id -> (key id, secret)


def state_path(settings: Settings):
    return settings.keys_dir / "demo.json"


def prepare(settings: Settings, rows: int, progress: Callable[[str], None]) -> DemoState:
    """Create the demo data directory, or reuse the one a previous run left."""
    path = state_path(settings)
    if path.exists():
        doc = json.loads(path.read_text())
        progress(f"reusing the demo data in {settings.data_dir}")
        return DemoState(doc["keys"], {k: tuple(v) for k, v in doc["callers"].items()})
    initialise(settings)
    progress(f"writing {HISTORY_DAYS} days of synthetic audit history ({rows:,} records)")
    generate(settings.data_dir, days=HISTORY_DAYS, rows=rows, licenses=300, progress=None)
    synthetic_licenses = pq.read_table(licenses_path(settings.data_dir)).to_pylist()
    synthetic_callers = pq.read_table(callers_path(settings.data_dir)).to_pylist()
    callers = {name: add_caller(settings.callers_path, settings.keys_dir, Caller(name, rate_limit_rps=rps))
               for name, rps in ((GOOD_CALLER, 0.0), (BAD_CALLER, 5.0))}
    keys = _issue(settings)
    _merge_snapshots(settings, synthetic_licenses, synthetic_callers)
    state = DemoState(keys, callers)
    write_private(path, json.dumps(asdict(state), indent=1).encode())
    return state


def _issue(settings: Settings) -> dict[str, str]:
    now = datetime.now(timezone.utc)
    policy = load_policy(settings.policy_path)
    store = open_store(settings)
    try:
        keys = {}
        for label, (customer, tier, days, status, options) in LICENSES.items():
            expires = now + timedelta(days=days) if days is not None else None
            starts = min(now, expires) - timedelta(days=365) if expires else now - timedelta(days=90)
            issued = admin.issue(store, policy, customer=customer, tier=tier, product=PRODUCT, starts_at=starts,
                                 expires_at=expires, metadata={"source": "demo"}, **options)
            if status is not Status.ACTIVE:
                admin.set_status(store, issued.license.license_id, status)
            keys[label] = issued.key
        admin.publish_snapshots(settings, store, policy)
    finally:
        store.close()
    return keys


def _merge_snapshots(settings: Settings, licenses: list[dict], callers: list[dict]) -> None:
    """Real rows plus the synthetic ones (a real caller replaces its synthetic namesake)."""
    real_licenses = pq.read_table(licenses_path(settings.data_dir)).to_pylist()
    real_callers = pq.read_table(callers_path(settings.data_dir)).to_pylist()
    named = {row["caller_id"] for row in real_callers}
    write_licenses_snapshot(settings.data_dir, real_licenses + licenses)
    write_callers_snapshot(settings.data_dir, real_callers + [row for row in callers if row["caller_id"] not in named])
