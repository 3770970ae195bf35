"""Policy impact replay speed (issue: replaying 10 million recorded checks takes ≤ 60 s).

``python -m bench.impact [--rows N] [--days D]`` prints one JSON object. It replays the synthetic
history of ``bench.reports`` (generated once, cached) through ``data/policy.toml`` and through a
proposal that removes a feature from a tier, lowers a seat limit and a quota and shortens the
grace period, with the licenses of the history's snapshot (it has no registry). The phases are
timed apart: reading the trail into columns, the two replays (in two forked processes, as the
command runs them), the report; the total is what
``portcullis policy impact`` costs. CPU seconds are reported beside the wall times (the
parent's: reading and reporting; each replay's), since other processes may share the machine.
The synthetic answers were not made by the engine, so the
self-check's figure says nothing here; the changed count shows the proposal bites.
"""
from __future__ import annotations

import os
import resource
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

from analytics.db import connect
from analytics.impact import read_history, report, snapshot_licenses, warmup
from analytics.replay import replay_each
from bench.reports import history, history_main
from gateway.policy import parse_policy

POLICY = Path(__file__).parent.parent / "data" / "policy.toml"
LIMIT_S = 60.0


def proposal(text: str) -> str:
    changed = (text.replace("grace_days = 7", "grace_days = 2")
               .replace('features = ["dashboard.view", "reports.basic"]', 'features = ["dashboard.view"]')
               .replace("seats = 25", "seats = 10")
               .replace("limit = 1000, period", "limit = 400, period"))
    assert changed.count("\n") == text.count("\n") and changed != text
    return changed


def run(rows: int = 10_000_000, days: int = 30) -> dict:
    data, synth = history(rows, days)
    current = parse_policy(POLICY.read_bytes(), str(POLICY))
    proposed = parse_policy(proposal(POLICY.read_text()).encode(), "proposed.toml")
    until = datetime.fromisoformat(synth["end"]) + timedelta(seconds=1)
    since = until - timedelta(days=days)
    load_before = os.getloadavg()[0]
    cpu0, t0 = time.process_time(), time.perf_counter()
    con = connect(data)
    licenses = snapshot_licenses(con, current)
    recorded = read_history(con, since - warmup(current, proposed), until, licenses)
    t1 = time.perf_counter()
    children0 = _children_cpu()
    cur, new = replay_each(recorded.history, [current, proposed], workers=2)
    t3 = time.perf_counter()
    replay_cpu = _children_cpu() - children0
    window = recorded.history.ts_us >= int(since.timestamp() * 1_000_000)
    result = report(recorded, window, cur, new, current, proposed)
    t4 = time.perf_counter()
    con.close()
    total = t4 - t0
    return {
        "records": len(recorded.history), "license_states": len(recorded.history.licenses),
        "changed": result["changed"], "read_s": round(t1 - t0, 2), "replay_both_s": round(t3 - t1, 2),
        "replay_cpu_s_per_policy": round(replay_cpu / 2, 2), "report_s": round(t4 - t3, 2), "total_s": round(total, 2),
        "parent_cpu_s": round(time.process_time() - cpu0, 2), "limit_s": LIMIT_S, "ok": total <= LIMIT_S,
        "us_per_record": round(total / max(1, len(recorded.history)) * 1e6, 2),
        "load_avg": [round(load_before, 2), round(os.getloadavg()[0], 2)], "cpus": os.cpu_count(),
    }


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (the two replays)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    return history_main("python -m bench.impact", __doc__.splitlines()[0], run, argv)


if __name__ == "__main__":
    sys.exit(main())
