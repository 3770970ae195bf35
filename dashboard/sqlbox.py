"""The audit explorer's SQL box: one read-only query, a bounded number of rows, within limits.

Read-only is enforced twice. DuckDB's own parser must see exactly one SELECT statement (``WITH``,
``FROM t`` and ``DESCRIBE`` parse as SELECT; ``INSERT``, ``SET``, ``ATTACH``, ``COPY``,
``PRAGMA`` and a second statement do not), and the connection it runs on is confined to the
folders the views read (``analytics.db.confine``), so table functions such as ``read_text``
cannot reach any other file.

Whatever anyone types must not hold up anyone else's charts, so the SQL box has a connection of
its own (``dashboard.data``), with a memory limit and a bounded temp directory (:func:`limits`);
each query is interrupted after ``dashboard_sql_timeout_s``, and a visitor (a browser session)
runs one query at a time (:func:`one_per_visitor`).
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import pandas as pd

from gateway.config import Settings

DEFAULT_LIMIT = 1_000
_HINT = "narrow the query (a `WHERE date >= ...` skips whole partitions)"

_running: set[str] = set()
_running_lock = threading.Lock()


class RefusedQuery(ValueError):
    """The text is not a single read-only query, or may not run now; the message says why, for
    the user."""


class StoppedQuery(RuntimeError):
    """The query ran into one of the SQL box's limits; the message (a sentence) says which, for
    the user."""


def check_select(sql: str) -> str:
    """Return the text of the one SELECT statement in ``sql``, or raise :class:`RefusedQuery`."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise RefusedQuery(f"cannot parse the query: {exc}") from None
    if not statements:
        raise RefusedQuery("enter a SELECT or WITH query")
    if len(statements) > 1:
        raise RefusedQuery("only one statement at a time")
    if statements[0].type != duckdb.StatementType.SELECT:
        raise RefusedQuery(f"only SELECT / WITH queries are allowed, not {statements[0].type.name}")
    return statements[0].query


def limits(settings: Settings) -> dict[str, str]:
    """The DuckDB settings that bound the SQL box's connection (its temp directory aside)."""
    return {"memory_limit": f"{settings.dashboard_sql_memory_mb}MB",
            "max_temp_directory_size": f"{settings.dashboard_sql_temp_mb}MB"}


@contextmanager
def one_per_visitor(visitor: str, settings: Settings) -> Iterator[None]:
    """Hold ``visitor``'s one running query; a second one while it runs is refused."""
    with _running_lock:
        if visitor in _running:
            raise RefusedQuery("your previous query is still running: wait for its answer "
                               f"(it is stopped after {settings.dashboard_sql_timeout_s:g} s)")
        _running.add(visitor)
    try:
        yield
    finally:
        with _running_lock:
            _running.discard(visitor)


def run(con: duckdb.DuckDBPyConnection, sql: str, limit: int = DEFAULT_LIMIT,
        timeout_s: float | None = None) -> tuple[pd.DataFrame, bool]:
    """Run a checked query and return at most ``limit`` rows, plus whether there were more.

    The limit is applied to the relation, so DuckDB stops early instead of materialising the
    whole result first. After ``timeout_s`` the query is interrupted (``duckdb.InterruptException``).
    """
    timer = threading.Timer(timeout_s, con.interrupt) if timeout_s is not None else None
    if timer:
        timer.start()
    try:
        rows = con.sql(check_select(sql)).limit(limit + 1).df()
    finally:
        if timer:
            timer.cancel()
    return rows.head(limit), len(rows) > limit


def run_bounded(con: duckdb.DuckDBPyConnection, sql: str, limit: int, settings: Settings) -> tuple[pd.DataFrame, bool]:
    """:func:`run` within the settings' time limit, a limit reached turned into :class:`StoppedQuery`."""
    try:
        return run(con, sql, limit, settings.dashboard_sql_timeout_s)
    except duckdb.InterruptException:
        raise StoppedQuery(f"Stopped after {settings.dashboard_sql_timeout_s:g} s: {_HINT}") from None
    except duckdb.OutOfMemoryException:
        raise StoppedQuery(f"Stopped: it needs more than {settings.dashboard_sql_memory_mb} MB of memory and "
                           f"{settings.dashboard_sql_temp_mb} MB of temporary disk; {_HINT}") from None
