"""Overview: what needs someone now, then the five headline numbers with their change, decisions
by outcome and latency."""
from __future__ import annotations

import streamlit as st

from dashboard import attention, data, figures
from dashboard.data import TimeRange
from dashboard.kpis import has_data, kpis
from dashboard.views.layout import ChartPlace, link, no_records, show

WARN_DAYS = 30  # the policy's default warning window before expiry (EXPIRING_SOON)


def render(root: str, window: TimeRange) -> None:
    # Shown first but filled last: its seven reports read raw records, the charts read rollups,
    # so the numbers and charts are not kept waiting for it.
    with st.container(border=True, key="attention"):
        st.subheader("Needs attention", anchor=False)
        attention_list = st.empty()
        attention_list.caption("Looking for what needs attention…")
    headline = st.container()
    decisions, latency = ChartPlace("overview-decisions"), ChartPlace("overview-latency")
    overview = data.report(root, "overview", window)
    with headline:
        if not has_data(overview):
            no_records(root, window)
        for column, kpi in zip(st.columns(5), kpis(overview)):
            column.metric(kpi.label, kpi.value, kpi.delta, delta_color=kpi.delta_color, help=kpi.help, border=True)
        st.caption(f"Changes are against the {window.hours} hours before the {window.label.lower()}.")
    trends = data.report(root, "trends", window)
    decisions.draw(figures.decisions_over_time(trends, window.bucket))
    latency.draw(figures.latency_percentiles(data.report(root, "latency", window), window.bucket))
    with attention_list.container():
        _attention(root, window)


def _attention(root: str, window: TimeRange) -> None:
    """Each kind of trouble with a link to the page that lists it, or a line saying all is well."""
    found = attention.items(
        expiring=data.report(root, "expiring", days=WARN_DAYS), quota=data.report(root, "quota-forecast"),
        seats=data.report(root, "seats"), keys=data.report(root, "stale-keys", window),
        unauthorized=data.report(root, "unauthorized", window), jumps=data.report(root, "deny-jumps", window),
        anomalies=data.report(root, "key-anomalies"), warn_days=WARN_DAYS)
    if not found:
        st.success("Nothing needs attention: no license, quota, seat limit, key or caller is in trouble.",
                   icon=":material/check_circle:")
    for item in found:
        icon = ":material/error:" if item.severity == "deny" else ":material/warning:"
        text, go = st.columns([5, 1], vertical_alignment="center")
        text.markdown(f"{icon} **{item.headline}** — {item.detail}")
        with go:
            link(item.page)


if __name__ == "__main__":  # run by st.navigation as the page
    show("overview", render)
