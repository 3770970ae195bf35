"""The dashboard's queries: registered reports run on one shared DuckDB connection, cached with a TTL.

Pages never write SQL: they name a report from ``analytics.registry`` (the same ones the CLI
runs) and a time range. Results are cached for :data:`TTL_S` seconds and shared by every browser
session, so an auto-refreshing wall screen and ten ops engineers cost one query per report per
TTL. (The default Overview's attention list is the exception: the upkeep evaluates it every
minute, looked at or not, with :func:`query`; see ``dashboard.watch``.)

The reports' connection is one per process (``st.cache_resource``), and queries on it are
serialised by a lock. DuckDB connections are not thread-safe and Streamlit runs every session in
its own thread; the usual answer, a cursor per thread, does not work here because the views read
session variables that a cursor (a fresh DuckDB session) does not inherit.
DuckDB parallelises each query across cores itself, so serialising loses little. The SQL box
has a connection of its own, bounded in time, memory and temp space (``dashboard.sqlbox``), so a
visitor's query never holds up the charts. Both are confined to the folders the views read
(``analytics.db.confine``): never ``keys/``, the registry database or anything else.

The connection lives as long as the process, opened while the server starts (``open_early``),
so no visitor waits for it and its Parquet metadata cache stays warm. The exception: when
``connect`` found no audit files yet, or left unreadable ones out, its views are fixed to what it
saw then, and only a new connection sees the files written since; such a connection is renewed
(see ``_Database.worth_keeping``). A change of the rollups on disk renews it too (``renew``,
from ``dashboard.upkeep``), since it reads their coverage when it opens.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import duckdb
import pandas as pd
import pyarrow as pa
import streamlit as st

from analytics import db as analytics_db
from analytics.registry import get_report, run_report
from dashboard import sqlbox
from gateway.config import load_settings

TTL_S = 30
CONNECTION_TTL_S = 120
EMPTY_TTL_S = 10
MAX_AGE_S = 24 * 3600


@dataclass(frozen=True)
class TimeRange:
    """A window ending now, with the bucket its charts are drawn in, and the gateway hosts whose
    records count (empty: every host's; see the views' ``hosts`` filter)."""

    label: str
    hours: int
    bucket: str  # "hour" | "day"
    hosts: tuple[str, ...] = ()
    code: str = ""  # in the query string: ?range=7d

    @property
    def days(self) -> int:
        return max(1, -(-self.hours // 24))

    def params_for(self, report: str) -> dict[str, Any]:
        """The time parameters (``hours``, ``days``, ``bucket``) that ``report`` declares."""
        values = {"hours": self.hours, "days": self.days, "bucket": self.bucket}
        return {p.name: values[p.name] for p in get_report(report).params if p.name in values}


RANGES = {r.label: r for r in (
    TimeRange("Last 24 hours", 24, "hour", code="24h"),
    TimeRange("Last 7 days", 7 * 24, "hour", code="7d"),
    TimeRange("Last 30 days", 30 * 24, "day", code="30d"),
    TimeRange("Last 90 days", 90 * 24, "day", code="90d"),
)}
DEFAULT_RANGE = "Last 7 days"


def data_dir() -> str:
    """The data directory: ``$PORTCULLIS_DATA``, else ``./data`` (as everywhere in Portcullis)."""
    return str(Path(os.environ.get("PORTCULLIS_DATA") or "data").resolve())


@dataclass
class _Database:
    con: duckdb.DuckDBPyConnection
    lock: threading.Lock
    opened: float = field(default_factory=time.monotonic)

    def worth_keeping(self) -> bool:
        """A live connection (``analytics.db.is_live``) is kept, its Parquet metadata cache warm,
        for up to :data:`MAX_AGE_S` (so footers of files compacted away do not pile up). One
        fixed to the files it saw is renewed: after :data:`EMPTY_TTL_S` if the trail was empty
        (cheap to reopen, and the first records should show up soon), else after
        :data:`CONNECTION_TTL_S` (reopening reads every footer again).

        Streamlit asks this under its cache lock: while a query holds the connection (the SQL
        box may, for seconds), the answer is "keep", and the question is asked again next time.
        """
        age = time.monotonic() - self.opened
        if not self.lock.acquire(blocking=False):
            return age < MAX_AGE_S
        try:
            if analytics_db.is_live(self.con):
                return age < MAX_AGE_S
            ttl = EMPTY_TTL_S if "audit" in analytics_db.empty_views(self.con) else CONNECTION_TTL_S
        finally:
            self.lock.release()
        return age < ttl


@st.cache_resource(validate=_Database.worth_keeping, show_spinner=False)
def _database(root: str, sql_box: bool = False) -> _Database:
    """The reports' connection, or with ``sql_box`` the SQL box's (bounded by ``sqlbox.limits``).
    Each spills to a temp directory of its own (0700), not to ``.tmp`` in the working directory,
    removed with it."""
    con = analytics_db.connect(root, skip_corrupt=True)
    temp = tempfile.mkdtemp(prefix="portcullis-duckdb-")
    options = sqlbox.limits(load_settings(root)) if sql_box else {}
    analytics_db.confine(con, root, temp_directory=temp, **options)
    db = _Database(con, threading.Lock())
    weakref.finalize(db, shutil.rmtree, temp, True)
    return db


@st.cache_data(ttl=TTL_S, show_spinner=False)
def report(root: str, name: str, window: TimeRange | None = None, **params: Any) -> pd.DataFrame:
    """A registered report as a DataFrame, cached (see :func:`query`)."""
    return query(root, name, window, **params)


def query(root: str, name: str, window: TimeRange | None = None, **params: Any) -> pd.DataFrame:
    """A registered report as a DataFrame, run now; ``window`` fills the time parameters the report
    declares (explicit ``params`` win) and narrows it to its hosts, other parameters take the
    report's defaults."""
    values = {**(window.params_for(name) if window else {}), **params}
    db = _database(root)
    with db.lock:
        table = run_report(db.con, name, window.hosts if window else (), **values)
    return frame(table)


def frame(table: pa.Table) -> pd.DataFrame:
    """A report's rows for pandas and Plotly. Decimals (DuckDB's HUGEINT sums of counts, exact
    averages) would become columns of Python ``Decimal`` objects that Plotly cannot rank or
    stack, so they become int64 (no fraction) or float64 first."""
    for i, column in enumerate(table.schema):
        if pa.types.is_decimal(column.type):
            target = pa.int64() if column.type.scale == 0 else pa.float64()
            table = table.set_column(i, column.name, table.column(i).cast(target))
    return table.to_pandas()


def sql(root: str, text: str, limit: int = sqlbox.DEFAULT_LIMIT, visitor: str = "") -> tuple[pd.DataFrame, bool]:
    """Run the SQL box's query for ``visitor`` on the SQL box's connection (never cached: whoever
    types SQL wants the current answer).

    Raises ``sqlbox.RefusedQuery`` for anything but one SELECT, or while ``visitor``'s previous
    query runs, and ``sqlbox.StoppedQuery`` for a query stopped by a limit. Other visitors' queries
    wait their turn, each for at most the time limit, since every query is stopped by then.
    """
    sqlbox.check_select(text)
    settings = load_settings(root)
    with sqlbox.one_per_visitor(visitor, settings):
        db = _database(root, sql_box=True)
        if not db.lock.acquire(timeout=settings.dashboard_sql_timeout_s):
            raise sqlbox.StoppedQuery("The SQL box is busy with other visitors' queries: try again in a moment.")
        try:
            return sqlbox.run_bounded(db.con, text, limit, settings)
        finally:
            db.lock.release()


def open_early(root: str) -> None:
    """Open the connection for ``root`` now (reading every audit file's footer), so the first
    visitor does not wait for it; ``portcullis dashboard`` calls this while the server starts."""
    _database(root)


def renew(root: str) -> None:
    """Replace the connection for ``root`` with a new one, opened now (after a rollup build).
    A query still running keeps the old one until it ends."""
    _database.clear()
    _database(root)


def skipped_files(root: str) -> list[str]:
    """Audit files the connection left out because they could not be read, for a warning."""
    db = _database(root)
    with db.lock:
        return analytics_db.skipped_files(db.con)


@contextmanager
def reports_connection(root: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """The reports' connection for ``root``, held for the caller's own queries (the charts'
    queries wait meanwhile, so hold it only to read)."""
    db = _database(root)
    with db.lock:
        yield db.con
