"""Layout pieces every page uses, so charts, tables and empty states look the same everywhere."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from analytics.db import audit_dir_of
from dashboard import figures
from dashboard.data import TimeRange

_CONFIG = {"displaylogo": False, "modeBarButtonsToRemove": ["lasso2d", "select2d"]}
LOADING = "Loading…"
_PLOTLY_LOADED = "_plotly_loaded"  # session state: this browser tab has drawn a chart


def chart(fig: go.Figure, key: str) -> None:
    _draw(st, fig, key)


class ChartPlace:
    """A place for a chart, reserved before the reports it needs are run; ``draw`` fills it.

    Until a session has drawn its first chart, the place shows a blank "Loading…" figure: the
    browser fetches Plotly's JavaScript (megabytes, loaded only once a page holds a chart) and
    compiles it while the queries run instead of after them, which is most of a first visit's
    wait. Afterwards it is a plain container, so an auto-refresh leaves the previous chart up
    until its replacement arrives instead of flickering to a placeholder.
    """

    def __init__(self, key: str):
        self.key = key
        if st.session_state.get(_PLOTLY_LOADED):
            self._holder = st.container()
        else:
            self._holder = st.empty()
            self._holder.plotly_chart(figures.empty("", LOADING), key=f"{key}-loading", config=_CONFIG)

    def draw(self, fig: go.Figure) -> None:
        _draw(self._holder, fig, self.key)


def _draw(where: DeltaGenerator, fig: go.Figure, key: str) -> None:
    where.plotly_chart(fig, key=key, config=_CONFIG)
    st.session_state[_PLOTLY_LOADED] = True


def table(df: pd.DataFrame, key: str, **column_config) -> None:
    """A report's rows as an interactive table; an empty one says so instead of drawing headers."""
    if df.empty:
        st.caption("Nothing to list.")
        return
    st.dataframe(df, key=key, hide_index=True, column_config=column_config or None)


def no_records(root: str, window: TimeRange) -> None:
    """The empty state: say where the dashboard looked and how records get there."""
    st.info(
        f"No audit records in the {window.label.lower()} under `{audit_dir_of(root)}`. Records appear a minute "
        "or so after the gateway (`portcullis serve`) answers requests; to try the dashboard without "
        "one, generate a synthetic history with `python -m analytics.synth --data DIR` and point "
        "`PORTCULLIS_DATA` (or `portcullis dashboard --data`) at it.",
        icon=":material/info:",
    )
