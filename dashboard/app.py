"""The Streamlit entry (``portcullis dashboard`` runs it): sidebar controls, then the chosen page.

Pages are chosen with a sidebar radio mirrored in the URL (``?page=security``), not with
``st.navigation``: that keeps every page bookmarkable and lets ``AppTest`` drive the whole app.
The page body is a fragment re-run on the auto-refresh timer, so the sidebar keeps its state and
only the charts are redrawn; the cached queries decide whether anything is actually re-read.
Nothing is drawn before ``signin.visitor`` has let the visitor in.
"""
from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import streamlit as st

from dashboard import data, signin
from dashboard.views import PAGES
from gateway.config import load_settings

REFRESH = {"Off": None, "30 s": 30, "1 min": 60, "5 min": 300}

st.set_page_config(page_title="Portcullis", page_icon=":material/security:", layout="wide")
root = data.data_dir()
settings = load_settings(root)
visitor = signin.visitor(settings)

with st.sidebar:
    st.title("Portcullis")
    signin.sidebar(settings, visitor)
    if "page" not in st.session_state:  # a new session starts on the page its URL names
        wanted = st.query_params.get("page")
        st.session_state["page"] = wanted if wanted in PAGES else next(iter(PAGES))
    slug = st.radio("Page", list(PAGES), key="page", format_func=lambda s: PAGES[s].title,
                    label_visibility="collapsed")
    st.query_params["page"] = slug
    ranges = list(data.RANGES)
    window = data.RANGES[st.selectbox("Time range", ranges, index=ranges.index(data.DEFAULT_RANGE), key="range")]
    hosts = list(data.report(root, "hosts", window)["host"])  # the gateway hosts that decided in the range
    if len(hosts) > 1 or st.session_state.get("hosts"):
        chosen = st.multiselect("Hosts", sorted({*hosts, *st.session_state.get("hosts", [])}), key="hosts",
                                placeholder="All hosts", help="Only these gateway hosts' decisions (an instance "
                                "without its worker suffix); none chosen: every host's.")
        window = dataclasses.replace(window, hosts=tuple(chosen))
    refresh = REFRESH[st.selectbox("Auto-refresh", list(REFRESH), index=2, key="refresh")]
    st.caption(f"Data: `{root}`  \nQueries are cached for {data.TTL_S} s.")

page = PAGES[slug]
st.header(page.title)


@st.fragment(run_every=refresh if page.live else None)
def body() -> None:
    skipped = data.skipped_files(root)
    if skipped:
        st.warning(f"{len(skipped)} unreadable audit file(s) left out, e.g. `{skipped[0]}`.", icon=":material/warning:")
    page.render(root, window)
    st.caption(f"As of {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC")


body()
