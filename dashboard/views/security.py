"""Security: who gets refused, how often, and why authentication fails."""
from __future__ import annotations

import streamlit as st

from dashboard import data, figures
from dashboard.data import TimeRange
from dashboard.views.layout import ChartPlace, table


def render(root: str, window: TimeRange) -> None:
    refusals = ChartPlace("security-refusals")
    left, right = st.columns(2)
    with left:
        offenders = ChartPlace("security-offenders")
    with right:
        auth_errors = ChartPlace("security-auth-errors")
    refusals.draw(figures.refusals_over_time(data.report(root, "trends", window)))
    unauthorized = data.report(root, "unauthorized", window)
    offenders.draw(figures.top_offenders(unauthorized))
    auth_errors.draw(figures.auth_errors(unauthorized))
    probing = unauthorized["kind"] == "key_probing"
    st.subheader("Key probing", help="Sources presenting many distinct unknown license keys: someone guessing "
                 "keys, or a service with a broken key store.")
    table(unauthorized[probing].drop(columns=["kind", "auth_error"]), key="security-probing-table")
    st.subheader("Refused requests")
    table(unauthorized[~probing].drop(columns=["kind", "distinct_keys"]), key="security-refused-table")
