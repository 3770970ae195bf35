"""The Overview's headline numbers and their change against the previous period of equal length.

Pure: it turns the ``overview`` report (one row per period) into what ``st.metric`` shows.
Deltas carry their sign first, which is how ``st.metric`` picks the arrow and colour; numbers
where "up" is bad (denials, alerts, latency, auth failures) use ``delta_color="inverse"``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd


@dataclass(frozen=True)
class Kpi:
    label: str
    value: str
    delta: str | None  # None: nothing to compare with
    delta_color: Literal["normal", "inverse"]
    help: str


def kpis(overview: pd.DataFrame) -> list[Kpi]:
    """Decisions, deny %, alerts, p99 latency and auth failures, each with its change."""
    periods = overview.set_index("period")
    now, before = periods.loc["current"], periods.loc["previous"]
    return [
        Kpi("Decisions", f"{int(now.decisions):,}", _count_delta(now.decisions, before.decisions), "normal",
            "Decisions made in the range (one per check, including refused requests)."),
        Kpi("Deny rate", _pct(now.deny_pct), _points_delta(now.deny_pct, before.deny_pct), "inverse",
            "Share of decisions that were deny."),
        Kpi("Alerts", f"{int(now.alerts):,}", _count_delta(now.alerts, before.alerts), "inverse",
            "Decisions that allowed but asked for attention (expiring, grace, overage, near quota)."),
        Kpi("p99 latency", _ms(now.p99_us), _ms_delta(now.p99_us, before.p99_us), "inverse",
            "99th percentile of the time from request received to decision made."),
        Kpi("Auth failures", f"{int(now.auth_failures):,}", _count_delta(now.auth_failures, before.auth_failures),
            "inverse", "Requests refused with 401: missing, unknown, stale or badly signed credentials."),
    ]


def has_data(overview: pd.DataFrame) -> bool:
    return bool(overview["decisions"].sum())


def _count_delta(now: float, before: float) -> str | None:
    if not before:
        return None
    change = int(now) - int(before)
    return f"{change:+,} ({100 * change / before:+.1f}%)"


def _points_delta(now: float, before: float) -> str | None:
    if pd.isna(now) or pd.isna(before):
        return None
    return f"{now - before:+.2f} pp"


def _ms_delta(now: float, before: float) -> str | None:
    if pd.isna(now) or pd.isna(before):
        return None
    return f"{(now - before) / 1000:+.2f} ms"


def _pct(value: float) -> str:
    return "–" if pd.isna(value) else f"{value:.2f} %"


def _ms(us: float) -> str:
    return "–" if pd.isna(us) else f"{us / 1000:.2f} ms"
