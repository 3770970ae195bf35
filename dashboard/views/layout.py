"""Layout pieces every page uses, so charts, tables and empty states look the same everywhere."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from analytics.db import audit_dir_of
from dashboard import data, figures, filters
from dashboard.data import TimeRange
from dashboard.views import PAGES

_CONFIG = {"displaylogo": False, "modeBarButtonsToRemove": ["lasso2d", "select2d"]}
LOADING = "Loading…"
_PLOTLY_LOADED = "_plotly_loaded"  # session state: this browser tab has drawn a chart


def show(slug: str, render: Callable[[str, TimeRange], None]) -> None:
    """Run page ``slug``: its header, then its body as a fragment that the auto-refresh timer
    re-runs (live pages only), so the sidebar keeps its state and only the page is redrawn; the
    cached queries decide whether anything is actually re-read."""
    page, root = PAGES[slug], data.data_dir()
    st.header(page.title)

    @st.fragment(run_every=filters.refresh_s() if page.live else None)
    def body() -> None:
        skipped = data.skipped_files(root)
        if skipped:
            st.warning(f"{len(skipped)} unreadable audit file(s) left out, e.g. `{skipped[0]}`.",
                       icon=":material/warning:")
        render(root, filters.window())
        st.caption(f"As of {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC")

    body()


def link(slug: str, **params: str) -> None:
    """A link to page ``slug`` that keeps the shared filters (and adds ``params``)."""
    page = PAGES[slug]
    st.page_link(page.path, label=page.title, icon=page.icon, query_params=filters.link_params(**params))


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


def side_by_side(*keys: str) -> list[ChartPlace]:
    """Chart places in columns of equal width, one per key, left to right."""
    places = []
    for column, key in zip(st.columns(len(keys)), keys):
        with column:
            places.append(ChartPlace(key))
    return places


def _draw(where: DeltaGenerator, fig: go.Figure, key: str) -> None:
    where.plotly_chart(fig, key=key, config=_CONFIG)
    st.session_state[_PLOTLY_LOADED] = True


def table(df: pd.DataFrame, key: str, **column_config) -> None:
    """A report's rows as an interactive table; an empty one says so instead of drawing headers.
    Times are shown to the minute (UTC), which keeps a wide report within the page's width."""
    if df.empty:
        st.caption("Nothing to list.")
        return
    minutes = {name: st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")
               for name, dtype in df.dtypes.items() if pd.api.types.is_datetime64_any_dtype(dtype)}
    st.dataframe(df, key=key, hide_index=True, column_config=minutes | column_config)


def no_records(root: str, window: TimeRange) -> None:
    """The empty state: say where the dashboard looked and how records get there."""
    st.info(
        f"No audit records in the {window.label.lower()} under `{audit_dir_of(root)}`. Records appear a minute "
        "or so after the gateway (`portcullis serve`) answers requests; to try the dashboard without "
        "one, generate a synthetic history with `python -m analytics.synth --data DIR` and point "
        "`PORTCULLIS_DATA` (or `portcullis dashboard --data`) at it.",
        icon=":material/info:",
    )
