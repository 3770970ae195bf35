"""The audit explorer's SQL box: one read-only query, a bounded number of rows.

Read-only is enforced twice. DuckDB's own parser must see exactly one SELECT statement (``WITH``,
``FROM t`` and ``DESCRIBE`` parse as SELECT; ``INSERT``, ``SET``, ``ATTACH``, ``COPY``,
``PRAGMA`` and a second statement do not), and the connection it runs on is locked to the data
directory (see ``data.connection``), so table functions such as ``read_text`` cannot reach any
other file.
"""
from __future__ import annotations

import duckdb
import pandas as pd

DEFAULT_LIMIT = 1_000


class RefusedQuery(ValueError):
    """The text is not a single read-only query; the message says why, for the user."""


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


def run(cur: duckdb.DuckDBPyConnection, sql: str, limit: int = DEFAULT_LIMIT) -> tuple[pd.DataFrame, bool]:
    """Run a checked query and return at most ``limit`` rows, plus whether there were more.

    The limit is applied to the relation, so DuckDB stops early instead of materialising the
    whole result first.
    """
    rows = cur.sql(check_select(sql)).limit(limit + 1).df()
    return rows.head(limit), len(rows) > limit
