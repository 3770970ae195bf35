"""The Licenses page's Impact view: upload or paste a proposed policy, see which recorded
decisions it would change, over time and by customer, before anyone reloads anything.

A thin view over :mod:`analytics.impact`. The dashboard never reads the registry, so licenses
come from the analytics snapshot (the report says so). The report is kept in the session, so the
page's auto-refresh does not wipe it, and cached by policy text and days.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from analytics import impact
from dashboard import data, figures
from dashboard.views.layout import chart, table
from gateway.config import load_settings
from gateway.policy import PolicyError, load_policy, parse_policy

PASTED = "pasted policy"  # how a broken pasted policy's error names it
_RESULT = "impact-result"  # session state: the last report (or error) shown


@st.cache_data(ttl=data.TTL_S, show_spinner=False, max_entries=8)
def _report(root: str, text: bytes, source: str, days: int) -> dict:
    proposed = parse_policy(text, source)
    current = load_policy(load_settings(root).policy_path)
    with data.reports_connection(root) as con:
        licenses = impact.snapshot_licenses(con, current)
        recorded, since, until = impact.replayable(con, licenses, current, proposed, days=days)
    return impact.compare(recorded, since, until, licenses, current, proposed, proposed_source=source)


def render(root: str) -> None:
    st.subheader("Impact of a proposed policy")
    with st.form("impact-form"):
        upload = st.file_uploader("Upload policy.toml", type=["toml"], key="impact-upload")
        pasted = st.text_area("…or paste it", height=200, key="impact-text")
        days = st.number_input("Replay the last N days", min_value=1, max_value=366, value=30, key="impact-days")
        if st.form_submit_button("Replay history"):
            st.session_state[_RESULT] = _replay(root, upload, pasted, int(days))
    result = st.session_state.get(_RESULT)
    if isinstance(result, str):
        st.error(result, icon=":material/error:")
    elif result is not None:
        _show(result)


def _replay(root: str, upload, pasted: str, days: int) -> dict | str:
    """The report, or the one-line reason nothing was replayed."""
    text, source = (upload.getvalue(), upload.name) if upload is not None else (pasted.encode(), PASTED)
    if not text.strip():
        return "Upload or paste a policy first."
    try:
        parse_policy(text, source)  # refused here, uncached, before anything is read
        with st.spinner("Replaying the recorded checks…"):
            return _report(root, text, source, days)
    except (PolicyError, impact.ImpactError) as exc:
        return f"Nothing replayed: {exc}"


def _show(r: dict) -> None:
    check = r["self_check"]
    st.metric("Decisions that would change", f"{r['changed']:,}", help=f"of {r['replayed']:,} replayed")
    st.caption(f"Policy {r['current_policy']} → {r['proposed_policy']} ({r['proposed_source']}), "
               f"{r['since'][:16]} to {r['until'][:16]}. Licenses as the trail records them (tier, expiry, "
               f"status), else from the {r['licenses_source']}.")
    lines = [f"Self-check: the replay under the current policy reproduces {check['reproduced']:,} of "
             f"{check['replayed']:,} recorded decisions."]
    lines += [f"- {d['records']:,} differ: {d['cause']}" for d in check["differ"]]
    st.info("\n".join(lines), icon=":material/fact_check:")
    left, right = st.columns(2)
    with left:
        chart(figures.impact_over_time(pd.DataFrame(r["by_day"], columns=["day", "after", "records"])),
              key="impact-over-time")
    with right:
        chart(figures.impact_by_customer(pd.DataFrame(r["by_customer"],
                                                      columns=["customer", "before", "after", "records"])),
              key="impact-by-customer")
    table(pd.DataFrame(r["transitions"], columns=["before", "after", "records"]), key="impact-transitions")
    table(pd.DataFrame(r["by_customer"], columns=["customer", "before", "after", "records"]),
          key="impact-by-customer-table")
    table(pd.DataFrame(r["examples"]), key="impact-examples")
