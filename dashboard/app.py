"""The Streamlit entry (``portcullis dashboard`` runs it): sign-in, the pages, the shared filters.

Every page is a file run by ``st.navigation``, so each has its own URL (``/licenses``); the time
range and the other shared filters live in the query string (``dashboard.filters``), so a link
opens the same view and the back button goes back to the previous one. Nothing is drawn before
``signin.visitor`` has let the visitor in.
"""
from __future__ import annotations

import streamlit as st

from dashboard import data, filters, signin
from dashboard.views import DEFAULT_PAGE, PAGES
from gateway.config import load_settings

st.set_page_config(page_title="Portcullis", page_icon=":material/security:", layout="wide")
root = data.data_dir()
settings = load_settings(root)
visitor = signin.visitor(settings)

pages = {p.slug: st.Page(p.path, title=p.title, icon=p.icon, url_path=p.slug, default=p.slug == DEFAULT_PAGE)
         for p in PAGES.values()}
current = st.navigation(list(pages.values()))
old = st.query_params.get("page")  # a bookmark from before pages had paths: /?page=security
if old in pages:
    st.switch_page(pages[old], query_params={k: st.query_params.get_all(k) for k in st.query_params if k != "page"})

with st.sidebar:
    st.title("Portcullis")
    signin.sidebar(settings, visitor)
    filters.sidebar(root)
    st.caption(f"Data: `{root}`  \nQueries are cached for {data.TTL_S} s.")

current.run()
