"""Overview: what needs someone now, then the five headline numbers with their change, decisions
by outcome and latency."""
from __future__ import annotations

from functools import partial

import streamlit as st

from dashboard import attention, data, figures, watch
from dashboard.data import TimeRange
from dashboard.kpis import has_data, kpis
from dashboard.views.layout import ChartPlace, link, no_records, show


def render(root: str, window: TimeRange) -> None:
    # Shown first but filled last: evaluated here (any view but the default), its seven reports
    # cost more than the charts', which are not kept waiting for it.
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
    """Each kind of trouble with a link to the page that lists it, or a line saying all is well:
    the default view's as evaluated ahead (``dashboard.watch``), any other view's now."""
    ahead = watch.latest(root, window)
    found = ahead.items if ahead else attention.gather(partial(data.report, root), window)
    if not found:
        st.success("Nothing needs attention: no license, quota, seat limit, key or caller is in trouble.",
                   icon=":material/check_circle:")
    for item in found:
        icon = ":material/error:" if item.severity == "deny" else ":material/warning:"
        text, go = st.columns([5, 1], vertical_alignment="center")
        text.markdown(f"{icon} **{item.headline}** — {item.detail}")
        with go:
            link(item.page)
    if ahead:
        st.caption(f"Checked at {ahead.as_of:%H:%M:%S} UTC; checked again about every minute.")


if __name__ == "__main__":  # run by st.navigation as the page
    show("overview", render)
