"""Layout pieces every page uses, so charts, tables and empty states look the same everywhere."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard.data import TimeRange

_CONFIG = {"displaylogo": False, "modeBarButtonsToRemove": ["lasso2d", "select2d"]}


def chart(fig: go.Figure, key: str) -> None:
    st.plotly_chart(fig, key=key, config=_CONFIG)


def table(df: pd.DataFrame, key: str, **column_config) -> None:
    """A report's rows as an interactive table; an empty one says so instead of drawing headers."""
    if df.empty:
        st.caption("Nothing to list.")
        return
    st.dataframe(df, key=key, hide_index=True, column_config=column_config or None)


def no_records(root: str, window: TimeRange) -> None:
    """The empty state: say where the dashboard looked and how records get there."""
    st.info(
        f"No audit records in the {window.label.lower()} under `{root}/audit`. Records appear a minute "
        "or so after the gateway (`portcullis serve`) answers requests; to try the dashboard without "
        "one, generate a synthetic history with `python -m analytics.synth --data DIR` and point "
        "`PORTCULLIS_DATA` (or `portcullis dashboard --data`) at it.",
        icon=":material/info:",
    )
