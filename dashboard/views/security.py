"""Security: who gets refused, how often, and why authentication fails."""
from __future__ import annotations

import streamlit as st

from dashboard import data, figures
from dashboard.data import TimeRange
from dashboard.views.layout import ChartPlace, show, side_by_side, table


def render(root: str, window: TimeRange) -> None:
    refusals = ChartPlace("security-refusals")
    offenders, auth_errors = side_by_side("security-offenders", "security-auth-errors")
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


if __name__ == "__main__":  # run by st.navigation as the page
    show("security", render)
