"""Pure engine speed (SPEC §10: median decision ≤ 20 µs): the engine alone, no I/O.

Times batches of decisions over a mix of licenses and features so caches and branch paths are
exercised as in real traffic, and reports the median per-decision time over the batches.
"""
from __future__ import annotations

import json
import statistics
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from gateway.engine import decide, metering
from gateway.policy import load_policy
from gateway.types import Check, License, Usage

POLICY = load_policy(Path(__file__).parents[1] / "data" / "policy.toml")


def _cases(n: int = 1000) -> list[tuple[License, Check, Usage]]:
    now = datetime.now(timezone.utc)
    tiers = ["free", "pro", "enterprise"]
    features = {"free": "dashboard.view", "pro": "reports.sales", "enterprise": "api.calls"}
    cases = []
    for i in range(n):
        tier = tiers[i % 3]
        lic = License(license_id=f"lic_{i}", key_hash=f"{i:064x}", customer=f"c{i}", product="suite", tier=tier,
                      expires_at=now + timedelta(days=(i % 400) - 20))
        check = Check(feature=features[tier], environment="prod", user_id=f"u{i % 7}",
                      quantity=i % 2 if tier == "enterprise" else 0)
        cases.append((lic, check, Usage(seats_used=i % 3, holds_seat=i % 2 == 0, quota_used=i)))
    return cases


def run(rounds: int = 30, per_round: int = 1000) -> dict:
    cases = _cases(per_round)
    now = datetime.now(timezone.utc)
    timings = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for lic, check, usage in cases:
            decide(lic, POLICY, check, usage, now, 30, metering(lic, POLICY, check, now))
        timings.append((time.perf_counter_ns() - start) / per_round / 1000)
    return {"engine_median_us": round(statistics.median(timings), 2),
            "engine_p90_us": round(sorted(timings)[int(len(timings) * 0.9)], 2), "target_us": 20}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
