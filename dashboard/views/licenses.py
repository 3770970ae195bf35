"""Licenses: what expires soon and who is near a seat or quota limit."""
from __future__ import annotations

import streamlit as st

from dashboard import data, figures
from dashboard.data import TimeRange
from dashboard.views import impact
from dashboard.views.layout import ChartPlace, chart, table, show

HORIZONS = (7, 30, 60, 90, 180, 365)
_UTILISATION = st.column_config.ProgressColumn("utilisation", format="%.1f%%", min_value=0, max_value=100)


def render(root: str, window: TimeRange) -> None:
    horizon = st.select_slider("Expiring within (days)", HORIZONS, value=90, key="licenses-horizon")
    expiry = ChartPlace("licenses-expiry")
    expiring = data.report(root, "expiring", days=horizon)
    expiry.draw(figures.expiry_timeline(expiring))
    table(expiring, key="licenses-expiring-table")
    st.subheader("Renew first: the busiest of those")
    table(data.report(root, "renewals", days=horizon), key="licenses-renewals-table")

    # Seats are counted over the policy's seat window (the report's default), not the time range:
    # a seat stays held for that long after its user's last check.
    seats = data.report(root, "seats")
    quota = data.report(root, "quota-forecast")  # the current quota period, whatever the range
    left, right = st.columns(2)
    with left:
        chart(figures.utilisation(seats, "Seat utilisation", ["customer", "license_id"]), key="licenses-seats")
    with right:
        chart(figures.quota_at_risk(quota), key="licenses-quota")
    # The tables are wider than half the page: each gets the full width below the charts.
    table(seats.drop(columns="tier"), key="licenses-seats-table", utilisation_pct=_UTILISATION)
    table(quota.drop(columns=["tier", "period", "period_start", "last_seen"]), key="licenses-quota-table",
          used_pct={**_UTILISATION, "width": "small"}, period_end=st.column_config.DateColumn("period_end"))
    st.subheader("Seat pressure: when each seat-limited license reaches its limit at the current trend")
    table(data.report(root, "seat-pressure"), key="licenses-seat-pressure-table")
    impact.render(root)


if __name__ == "__main__":  # run by st.navigation as the page
    show("licenses", render)
