"""Audit explorer: filter the raw records, page through them, download them, or ask in SQL."""
from __future__ import annotations

import uuid

import duckdb
import pandas as pd
import pyarrow as pa
import streamlit as st

from analytics import output
from dashboard import data, sqlbox
from dashboard.data import TimeRange
from dashboard.views.layout import table, show

PAGE_SIZES = (50, 100, 500)
CSV_MAX_ROWS = 100_000
EXAMPLE_SQL = "SELECT decision, reason, count(*) AS calls\nFROM audit\nGROUP BY ALL\nORDER BY calls DESC"
_PAGE = "explorer-page"


def render(root: str, window: TimeRange) -> None:
    filters = _filters(root, window)
    size_column, page_column, _ = st.columns([1, 1, 4])
    page_size = size_column.selectbox("Rows per page", PAGE_SIZES, key="explorer-page-size", on_change=_first_page)
    page = page_column.number_input("Page", min_value=1, step=1, key=_PAGE)
    rows = data.report(root, "audit-page", window, page=int(page), page_size=page_size, **filters)
    matching = int(rows["matching"].iloc[0]) if len(rows) else 0
    if rows.empty and page > 1:  # the count comes with the rows, so past the end it is unknown
        st.caption(f"Page {page} is past the last page of matching records.")
    else:
        st.caption(f"{matching:,} matching records in the {window.label.lower()} · "
                   f"page {page} of {max(1, -(-matching // page_size))}, newest first")
    table(rows.drop(columns="matching"), key="explorer-table")
    st.download_button(
        f"Download CSV (up to {CSV_MAX_ROWS:,} records)", icon=":material/download:", file_name="audit.csv",
        mime="text/csv", on_click="ignore", disabled=not matching,
        data=lambda: _csv(data.report(root, "audit-page", window, page=1, page_size=CSV_MAX_ROWS, **filters)),
    )
    st.divider()
    _sql_box(root)


def _filters(root: str, window: TimeRange) -> dict[str, str]:
    """The filter widgets, as the ``audit-page`` report's parameters ('any' / '' = no filter)."""
    reasons = sorted(data.report(root, "trends", window)["reason"].unique())
    decision, reason, caller, license_, feature = st.columns(5)
    return {
        "decision": decision.selectbox("Decision", ("any", "allow", "alert", "deny"), key="explorer-decision",
                                       on_change=_first_page),
        "reason": reason.selectbox("Reason", ["", *reasons], format_func=lambda r: r or "any",
                                   key="explorer-reason", on_change=_first_page),
        "caller": caller.text_input("Caller", key="explorer-caller", on_change=_first_page).strip(),
        "license": license_.text_input("License id or customer", key="explorer-license",
                                       on_change=_first_page).strip(),
        "feature": feature.text_input("Feature", key="explorer-feature", on_change=_first_page).strip(),
    }


def _first_page() -> None:
    st.session_state[_PAGE] = 1


def _csv(rows: pd.DataFrame) -> str:
    """The CSV of ``portcullis sql --format csv`` (caller text escaped, formulas neutralised)."""
    return output.render(pa.Table.from_pandas(rows.drop(columns="matching"), preserve_index=False), "csv")


def _sql_box(root: str) -> None:
    """Read-only SQL over the views; the result survives reruns (auto-refresh, other widgets)."""
    st.subheader("SQL", help="One SELECT or WITH query over the views `audit`, `licenses` and `callers`. "
                 "Nothing can be changed and no other file can be read; a query is stopped after "
                 "a time limit, and you run one at a time.")
    with st.form("explorer-sql"):
        text = st.text_area("Query", EXAMPLE_SQL, height=140, key="explorer-sql-text")
        limit = st.number_input("Row limit", min_value=1, max_value=10_000, value=sqlbox.DEFAULT_LIMIT, step=100)
        if st.form_submit_button("Run", icon=":material/play_arrow:"):
            st.session_state["explorer-sql-result"] = _run(root, text, int(limit))
    result = st.session_state.get("explorer-sql-result")
    if isinstance(result, str):
        st.error(result)
    elif result is not None:
        rows, truncated = result
        st.caption(f"First {len(rows):,} rows (limit reached)" if truncated else f"{len(rows):,} rows")
        st.dataframe(rows, key="explorer-sql-table", hide_index=True)


def _run(root: str, text: str, limit: int) -> tuple[pd.DataFrame, bool] | str:
    """The query's rows, or the message that says why it was refused, stopped or failed."""
    visitor = st.session_state.setdefault("explorer-visitor", uuid.uuid4().hex)  # this browser session
    try:
        return data.sql(root, text, limit, visitor)
    except sqlbox.RefusedQuery as exc:
        return f"Refused: {exc}"
    except sqlbox.StoppedQuery as exc:
        return str(exc)
    except duckdb.Error as exc:
        return f"Query failed: {exc}"


if __name__ == "__main__":  # run by st.navigation as the page
    show("explorer", render)
