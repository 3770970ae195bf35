"""Dashboard first render (SPEC §10: the first page renders ≤ 3 s over 10 million audit records).

``python -m bench.dashboard [--rows N] [--days D]`` prints one JSON object. It reuses the
synthetic history of ``bench.reports`` (generated once under ``bench/out/``) and times the
Overview at the default range (last 7 days), always from cold caches:

- ``apptest``: the app run in-process by Streamlit's AppTest (connection, the three reports,
  figures, layout), with every Streamlit cache cleared before each run;
- ``browser``: ``portcullis dashboard`` started afresh and the page opened in headless Chromium,
  from navigation to the first chart and to every chart drawn (HTTP, websocket, queries, Plotly
  in the browser); then the same page reloaded, answered from the query cache.

The dashboard asks for "now", so the history should end near now: ``history_end`` and the
``decisions`` the page showed are reported to make a stale cache visible.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

from bench.browser import chromium, dashboard_server, wait_rendered
from bench.reports import history, history_main

LIMIT_S = 3.0
APP = find_spec("dashboard.app").origin


def _apptest(data: Path, repeat: int) -> dict:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ["PORTCULLIS_DATA"] = str(data)
    runs, decisions = [], None
    for _ in range(repeat):
        st.cache_data.clear()
        st.cache_resource.clear()
        at = AppTest.from_file(APP, default_timeout=120)
        began = time.perf_counter()
        at.run()
        runs.append(time.perf_counter() - began)
        if at.exception:
            raise RuntimeError(at.exception[0].value)
        decisions = next(m.value for m in at.metric if m.label == "Decisions")
    median = statistics.median(runs)
    return {"median_s": round(median, 3), "runs_s": [round(r, 3) for r in runs], "decisions": decisions,
            "ok": median <= LIMIT_S}


def _browser(data: Path) -> dict:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with tempfile.TemporaryDirectory() as tmp, dashboard_server(data, Path(tmp) / "dashboard.log") as url, \
            chromium(Path(tmp) / "profile") as driver:
        began = time.perf_counter()
        driver.get(f"{url}/?page=overview")
        WebDriverWait(driver, 120, poll_frequency=0.02).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .main-svg"))
        first_chart = time.perf_counter() - began
        wait_rendered(driver, "Overview", charts=2, timeout=120)
        cold = time.perf_counter() - began
        began = time.perf_counter()
        driver.refresh()
        wait_rendered(driver, "Overview", charts=2, timeout=120)
        warm = time.perf_counter() - began
    return {"cold_first_chart_s": round(first_chart, 3), "cold_rendered_s": round(cold, 3),
            "warm_rendered_s": round(warm, 3), "ok": cold <= LIMIT_S}


def run(rows: int = 10_000_000, days: int = 30, repeat: int = 3) -> dict:
    data, summary = history(rows, days)
    return {
        "benchmark": "dashboard", "page": "overview", "range": "Last 7 days", "rows": summary["rows"],
        "days": days, "history_end": summary["end"], "limit_s": LIMIT_S,
        # Absolute times on a shared machine mean little without its load.
        "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
        "apptest": _apptest(data, repeat), "browser": _browser(data),
    }


def main(argv: list[str] | None = None) -> int:
    return history_main("python -m bench.dashboard", __doc__.splitlines()[0], run, argv)


if __name__ == "__main__":
    sys.exit(main())
