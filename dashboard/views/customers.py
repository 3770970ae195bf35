"""Customers: pick one (it goes in the URL, ?customer=acme) and see its licenses with expiry and
status, seats against the limit over time, each metered quota's burn with its projection to the
end of the period, its decisions by outcome and reason, and the callers and environments using it."""
from __future__ import annotations

import streamlit as st

from dashboard import data, figures, filters
from dashboard.data import TimeRange
from dashboard.views.layout import ChartPlace, show, side_by_side, table

CUSTOMER = "customer"  # query-string parameter and widget key


def render(root: str, window: TimeRange) -> None:
    customers = data.report(root, "customers", window)
    names = customers["customer"].tolist()
    filters.follow_url(CUSTOMER, CUSTOMER, lambda values: values[0] if values[0] in names else None)
    name = st.selectbox("Customer", names, index=None, key=CUSTOMER, placeholder="Type a customer's name",
                        help="The registry's customers, the busiest in the time range first.")
    filters.write_url(CUSTOMER, [name] if name else [])
    if name is None:
        st.info("Pick a customer to see its licenses, seats, quotas, decisions and callers."
                if names else "No customer in the registry snapshot yet.", icon=":material/info:")
        return

    outcomes, reasons = side_by_side("customers-outcomes", "customers-reasons")
    seats, quota = side_by_side("customers-seats", "customers-quota")
    callers = ChartPlace("customers-callers")

    licenses = data.report(root, "customer", window, customer=name)
    activity = data.report(root, "customer-activity", window, customer=name)
    forecast = data.report(root, "quota-forecast")
    outcomes.draw(figures.decisions_over_time(activity, window.bucket))
    reasons.draw(figures.reasons_by_outcome(activity))
    seats.draw(figures.seats_over_time(activity, window.bucket))
    quota.draw(figures.quota_burn(activity, forecast[forecast["license_id"].isin(licenses["license_id"])],
                                  window.bucket))
    callers.draw(figures.callers_and_environments(activity))
    st.subheader("Licenses", anchor=False)
    table(licenses, key="customers-licenses-table")


if __name__ == "__main__":  # run by st.navigation as the page
    show("customers", render)
