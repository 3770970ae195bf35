"""The filters every page shares (time range, hosts), kept in the query string as well as in the
sidebar, so a link carries them, a shared URL opens on the same view and the back button restores
the previous one.

Streamlit's page links in the sidebar drop the query string, so a URL *without* a parameter keeps
the session's choice; a URL with a value this session did not write itself (a shared link, the
back button, an address typed in) sets the widget before it is drawn. Each widget's value is
written back to the URL on every run.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable

import streamlit as st

from dashboard import data
from dashboard.data import RANGES, TimeRange

RANGE, HOST = "range", "host"  # query-string parameters
REFRESH = {"Off": None, "30 s": 30, "1 min": 60, "5 min": 300}
_CODES = {r.code: label for label, r in RANGES.items()}


def follow_url(key: str, param: str, decode: Callable[[list[str]], object]) -> None:
    """Before widget ``key`` is drawn: take the URL's ``param`` if the URL changed it, or if the
    widget has no value (Streamlit forgets a widget's value once a page without it was shown, so
    the back button to that page must set it again). ``decode`` turns the URL's values into the
    widget's value, None when they mean nothing."""
    values = st.query_params.get_all(param)
    if values and (values != st.session_state.get(f"_url_{param}") or key not in st.session_state):
        value = decode(values)
        if value is not None:
            st.session_state[key] = value


def write_url(param: str, values: Iterable[str]) -> None:
    """Put a widget's value in the URL (no values: no parameter), remembering what was written."""
    values = list(values)
    if values:
        st.query_params[param] = values
    elif param in st.query_params:
        del st.query_params[param]
    st.session_state[f"_url_{param}"] = values


def sidebar(root: str) -> None:
    """The shared controls: time range, hosts (once several decided in it), auto-refresh."""
    follow_url("range", RANGE, lambda values: _CODES.get(values[0]))
    st.session_state.setdefault("range", data.DEFAULT_RANGE)
    label = st.selectbox("Time range", list(RANGES), key="range")
    write_url(RANGE, [RANGES[label].code])

    hosts = list(data.report(root, "hosts", RANGES[label])["host"])  # the gateway hosts that decided in the range
    follow_url("hosts", HOST, lambda values: [v for v in values if v in hosts])  # a host no record names: ignored
    if len(hosts) > 1 or st.session_state.get("hosts"):
        st.multiselect("Hosts", sorted({*hosts, *st.session_state.get("hosts", [])}), key="hosts",
                       placeholder="All hosts", help="Only these gateway hosts' decisions (an instance "
                       "without its worker suffix); none chosen: every host's.")
    write_url(HOST, st.session_state.get("hosts", []))
    st.selectbox("Auto-refresh", list(REFRESH), index=2, key="refresh")


def window() -> TimeRange:
    """The time range and hosts chosen in the sidebar (drawn earlier in this run)."""
    chosen = RANGES[st.session_state.get("range", data.DEFAULT_RANGE)]
    return dataclasses.replace(chosen, hosts=tuple(st.session_state.get("hosts", ())))


def refresh_s() -> int | None:
    return REFRESH[st.session_state.get("refresh", "1 min")]


def link_params(**extra: str) -> dict[str, str | list[str]]:
    """The query string a link to another page carries: the shared filters, plus ``extra``."""
    chosen = window()
    params: dict[str, str | list[str]] = {RANGE: chosen.code}
    if chosen.hosts:
        params[HOST] = list(chosen.hosts)
    return params | extra
