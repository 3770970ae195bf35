"""Keys: active keys nobody uses any more, and dead keys somebody still presents."""
from __future__ import annotations

import streamlit as st

from dashboard import data, figures
from dashboard.data import TimeRange
from dashboard.views.layout import ChartPlace, table, show

STALE_AFTER = (7, 14, 30, 60, 90)


def render(root: str, window: TimeRange) -> None:
    days = st.select_slider("Stale after (days without an allowed check)", STALE_AFTER, value=30, key="keys-days")
    left, right = st.columns([2, 3])
    with left:
        kinds = ChartPlace("keys-kinds")
    with right:
        zombies = ChartPlace("keys-zombies")
    keys = data.report(root, "stale-keys", days=days)
    kinds.draw(figures.keys_by_kind(keys))
    zombies.draw(figures.zombie_keys(keys))
    zombie = keys["kind"].isin(figures.ZOMBIE_KINDS)
    st.subheader("Zombie keys", help="Keys of revoked or expired licenses, or of no license at all, still presented "
                 f"within {days} days: some service's configuration is out of date, or someone is guessing.")
    table(keys[zombie].drop(columns=["expires_at"]), key="keys-zombie-table")
    st.subheader("Keys used in a new way", help="Keys presented in the last 24 hours by a caller, or from a network, "
                 "never seen with them in the 30 days before, or far more often than usual: the signal of a leaked key.")
    table(data.report(root, "key-anomalies"), key="keys-anomalies-table")
    st.subheader("Stale keys", help=f"Active, unexpired licenses with no allowed check within {days} days: "
                 "candidates for revocation.")
    table(keys[~zombie].drop(columns=["presented", "callers"]), key="keys-stale-table")


if __name__ == "__main__":  # run by st.navigation as the page
    show("keys", render)
