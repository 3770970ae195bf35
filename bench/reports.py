"""Report speed (SPEC §10: every report ≤ 1 s over 10 million audit records).

``python -m bench.reports [--rows N] [--days D]`` prints one JSON object, with a part per history
shape (``analytics.synth``): ``gateway``, as this gateway writes its trail, and ``skewed``, most
licenses expiring within the month, a few carrying most of the traffic, and files as another
engine writes them. Each history is generated once into ``bench/out/reports-<rows>-<days>d[-skewed]/``
and reused by later runs (generated again once it ended more than a day ago). Its rollups are
then built from scratch and timed, as a deployment builds them (``analytics.rollups``). One
connection is opened (timed apart, like a dashboard's long-lived one), then every registered
report runs three times as of the history's end; the median wall time is the figure, with the
process CPU time (all DuckDB threads) beside it and the load average around the run, since other
processes may share the machine. The reports that read the rollups also run with the rollups of
the last two days removed (``tail_raw_s``: the rollups lagging behind, those days read raw) and
without any (``without_rollups_s``: before the first build). Each report's plan is summarised
from EXPLAIN: the partition filter DuckDB applied and how many files it kept.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import duckdb

from analytics import rollups
from analytics.db import ROLLUPS_DIR, audit_files, connect, drop_rollups
from analytics.registry import REPORTS, run_report
from analytics.synth import generate

OUT = Path(__file__).with_name("out")
LIMIT_S = 1.0


SHAPES = ("gateway", "skewed")
TAIL_DAYS = 2  # tail_raw_s: the rollups of this many last days removed


def history(rows: int, days: int, shape: str = "gateway") -> tuple[Path, dict]:
    """The cached synthetic history for (rows, days, shape), generated on first use."""
    data = OUT / (f"reports-{rows}-{days}d" + ("" if shape == "gateway" else f"-{shape}"))
    summary_path = data / "synth.json"
    if not summary_path.exists() or _ended_long_ago(summary_path):
        shutil.rmtree(data, ignore_errors=True)  # a half-written cache from an interrupted run
        summary = generate(data, days=days, rows=rows, shape=shape,
                           progress=lambda line: print(line, file=sys.stderr))
        summary_path.write_text(json.dumps(summary))
    return data, json.loads(summary_path.read_text())


def _ended_long_ago(summary_path: Path) -> bool:
    """Whether the cached history ended more than a day ago: the dashboard looks at the days up
    to now, which would then hold fewer records than the history's rows suggest."""
    end = datetime.fromisoformat(json.loads(summary_path.read_text())["end"])
    return datetime.now(timezone.utc) - end > timedelta(days=1)


def summarised(data: Path) -> rollups.Build:
    """Build the history's rollups, as ``portcullis dashboard`` or ``portcullis rollup`` would:
    every hour of it is closed (no writer adds to it)."""
    return rollups.build(data, now=datetime.now(timezone.utc), grace=timedelta(0))


def scans(plan: Any) -> Iterator[dict[str, str]]:
    """The Parquet scans of an EXPLAIN (FORMAT JSON) plan, with their partition pruning."""
    nodes = plan if isinstance(plan, list) else [plan]
    for node in nodes:
        info = node.get("extra_info", {})
        if node.get("name") == "READ_PARQUET":
            yield {"file_filters": info.get("File Filters", "(none)"), "scanning_files": info.get("Scanning Files", "all")}
        yield from scans(node.get("children", []))


def _timed(con: duckdb.DuckDBPyConnection, name: str, now: datetime) -> tuple[float, float, int]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = run_report(con, name, now=now)
    return time.perf_counter() - wall, time.process_time() - cpu, result.num_rows


def _lagging(data: Path, now: datetime) -> duckdb.DuckDBPyConnection:
    """A connection to a copy of the rollups without their last TAIL_DAYS days (the audit files
    are linked, not copied): the days a build has not reached yet, read raw."""
    lag = data.with_name(data.name + "-lagging")
    shutil.rmtree(lag, ignore_errors=True)
    shutil.copytree(data, lag, copy_function=os.link, ignore=shutil.ignore_patterns("*.lock"))
    for back in range(TAIL_DAYS):
        shutil.rmtree(lag / ROLLUPS_DIR / f"date={(now - timedelta(days=back + 1)).date().isoformat()}",
                      ignore_errors=True)
    return connect(lag)


def run(rows: int = 10_000_000, days: int = 30, repeat: int = 3) -> dict:
    shapes = {shape: measure(rows, days, shape, repeat) for shape in SHAPES}
    return {"benchmark": "reports", "rows": rows, "days": days, "limit_s": LIMIT_S,
            "all_ok": all(s["all_ok"] for s in shapes.values()), "shapes": shapes}


def measure(rows: int, days: int, shape: str, repeat: int) -> dict:
    data, summary = history(rows, days, shape)
    now = datetime.fromisoformat(summary["end"])
    load_before = os.getloadavg()[0]
    shutil.rmtree(data / ROLLUPS_DIR, ignore_errors=True)
    built = summarised(data)
    began = time.perf_counter()
    con = connect(data)
    connect_s = time.perf_counter() - began
    raw = connect(data)
    drop_rollups(raw)
    lagging = _lagging(data, now)
    reports = {}
    for name, report in REPORTS.items():
        runs = [_timed(con, name, now) for _ in range(repeat)]
        plan = con.execute("EXPLAIN (FORMAT JSON) " + report.sql, report.bind(now=now)).fetchall()[0][1]
        median = statistics.median(wall for wall, _, _ in runs)
        reports[name] = {
            "median_s": round(median, 3),
            "runs_s": [round(wall, 3) for wall, _, _ in runs],
            "cpu_s": round(statistics.median(cpu for _, cpu, _ in runs), 3),
            "result_rows": runs[0][2],
            "ok": median <= LIMIT_S,
            "scans": list(scans(json.loads(plan))),
        }
        if report.reads_rollups:
            reports[name]["tail_raw_s"] = round(statistics.median(
                _timed(lagging, name, now)[0] for _ in range(repeat)), 3)
            reports[name]["ok"] = reports[name]["ok"] and reports[name]["tail_raw_s"] <= LIMIT_S
            reports[name]["without_rollups_s"] = round(statistics.median(
                _timed(raw, name, now)[0] for _ in range(repeat)), 3)
    return {
        "shape": shape, "rows": summary["rows"], "days": days, "files": len(audit_files(con)),
        "limit_s": LIMIT_S, "connect_s": round(connect_s, 3),
        "rollups": {"build_s": built.seconds, "hours": built.hours_built, "days": len(built.days_written)},
        "threads": con.execute(
            "SELECT current_setting('threads')").fetchall()[0][0],
        # other processes on the machine inflate wall times: the 1-minute load around the run
        "load_avg": [round(load_before, 2), round(os.getloadavg()[0], 2)], "cpus": os.cpu_count(),
        "all_ok": all(r["ok"] for r in reports.values()), "reports": reports,
    }


def history_main(prog: str, description: str, measure, argv: list[str] | None = None) -> int:
    """The command line of a benchmark over the synthetic history: ``--rows``, ``--days``, JSON out."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.rows, args.days), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    return history_main("python -m bench.reports", __doc__.splitlines()[0], run, argv)


if __name__ == "__main__":
    sys.exit(main())
