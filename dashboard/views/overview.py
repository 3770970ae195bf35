"""Overview: the five headline numbers with their change, decisions by outcome, latency."""
from __future__ import annotations

import streamlit as st

from dashboard import data, figures
from dashboard.data import TimeRange
from dashboard.kpis import has_data, kpis
from dashboard.views.layout import ChartPlace, no_records


def render(root: str, window: TimeRange) -> None:
    headline = st.container()
    decisions, latency = ChartPlace("overview-decisions"), ChartPlace("overview-latency")
    overview = data.report(root, "overview", window)
    with headline:
        if not has_data(overview):
            no_records(root, window)
        for column, kpi in zip(st.columns(5), kpis(overview)):
            column.metric(kpi.label, kpi.value, kpi.delta, delta_color=kpi.delta_color, help=kpi.help, border=True)
        st.caption(f"Changes are against the {window.hours} hours before the {window.label.lower()}.")
    decisions.draw(figures.decisions_over_time(data.report(root, "trends", window)))
    latency.draw(figures.latency_percentiles(data.report(root, "latency", window)))
