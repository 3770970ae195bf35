"""Security: who gets refused, how often, and why authentication fails."""
from __future__ import annotations

import streamlit as st

from dashboard import data, figures
from dashboard.data import TimeRange
from dashboard.views.layout import chart, table


def render(root: str, window: TimeRange) -> None:
    chart(figures.refusals_over_time(data.report(root, "trends", window)), key="security-refusals")
    unauthorized = data.report(root, "unauthorized", window)
    left, right = st.columns(2)
    with left:
        chart(figures.top_offenders(unauthorized), key="security-offenders")
    with right:
        chart(figures.auth_errors(unauthorized), key="security-auth-errors")
    probing = unauthorized["kind"] == "key_probing"
    st.subheader("Key probing", help="Sources presenting many distinct unknown license keys: someone guessing "
                 "keys, or a service with a broken key store.")
    table(unauthorized[probing].drop(columns=["kind", "auth_error"]), key="security-probing-table")
    st.subheader("Refused requests")
    table(unauthorized[~probing].drop(columns=["kind", "distinct_keys"]), key="security-refused-table")
