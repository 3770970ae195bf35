"""DuckDB connections over a data directory: the views of ``views.sql`` and safe query execution.

``connect`` runs ``views.sql`` verbatim, with ``data_root`` set to the data directory's absolute
path and ``audit_root`` to the audit directory's (the ``audit_directory`` setting: it may be
shared by several hosts, whose records are then one history), so Python, the dashboard and the
stock DuckDB CLI see the same views. ``confine`` limits a
connection to the folders those views read, for SQL typed by whoever.
It copes with what the CLI cannot: a view whose files do not exist yet becomes an empty relation
with the right columns, and unreadable audit files can be left out. ``query`` runs SQL and turns
a damaged Parquet file into an error that names it (DuckDB only sometimes does).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

import duckdb
import pyarrow as pa

from gateway.audit.retention import ROLLUPS_DIR
from gateway.audit.schema import AUDIT_SCHEMA
from gateway.config import load_settings
from gateway.snapshot import CALLERS_SCHEMA, LICENSES_SCHEMA, SNAPSHOT_DIR

VIEWS_SQL = Path(__file__).with_name("views.sql")

# A day file of ``rollups/`` (written by ``analytics.rollups``): per hour, decision counts and a
# latency histogram; views.sql says how to read it.
ROLLUP_SCHEMA = pa.schema([
    pa.field("kind", pa.string(), nullable=False),
    pa.field("hour", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("decision", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("http_status", pa.int16()),
    pa.field("latency_us", pa.int64()),
    pa.field("calls", pa.int64(), nullable=False),
    pa.field("host", pa.string()),  # of decisions and latency rows: views.sql's host_of(instance)
])
# A day's per-license file of ``rollups/`` (``analytics.license_rollups``): the rows of
# license_days, quota_days and key_sources for one whole day; views.sql says how to read it.
LICENSE_ROLLUP_SCHEMA = pa.schema([
    pa.field("kind", pa.string(), nullable=False),  # license, feature, quota, source, key or covered
    pa.field("host", pa.string()),
    pa.field("license_id", pa.string()),
    pa.field("key_fp", pa.string()),
    pa.field("feature", pa.string()),
    pa.field("caller_id", pa.string()),
    pa.field("network", pa.string()),
    pa.field("calls", pa.int64()),
    pa.field("allowed", pa.int64()),
    pa.field("alerted", pa.int64()),
    pa.field("first_seen", pa.timestamp("us", tz="UTC")),
    pa.field("last_seen", pa.timestamp("us", tz="UTC")),
    pa.field("users", pa.list_(pa.string())),
    pa.field("features", pa.list_(pa.string())),
    pa.field("seats_used", pa.int32()),
    pa.field("seats_limit", pa.int32()),
    pa.field("seats_at", pa.timestamp("us", tz="UTC")),
    pa.field("seat_denials", pa.int64()),
    pa.field("seat_overages", pa.int64()),
    pa.field("quota_first", pa.int64()),
    pa.field("quota_used", pa.int64()),
    pa.field("quota_limit", pa.int64()),
    pa.field("quota_alerts", pa.int64()),
    pa.field("quota_denials", pa.int64()),
    pa.field("customer", pa.string()),  # of quota rows, as the records say
    pa.field("tier", pa.string()),  # of feature and quota rows, as the records say
    pa.field("last_used", pa.timestamp("us", tz="UTC")),  # of key rows
    pa.field("zombie", pa.string()),
    pa.field("presented", pa.int64()),
    pa.field("last_presented", pa.timestamp("us", tz="UTC")),
])
# The views that read rollups: empty on a connection without them.
ROLLUP_VIEWS = ("rollups", "license_rollups")
# The folders of the data directory the views read, besides the audit directory: all that a
# confined connection may read.
VIEW_DIRS = (ROLLUPS_DIR, SNAPSHOT_DIR)

# What each view looks like when there is nothing to read yet.
EMPTY_SCHEMAS: Mapping[str, pa.Schema] = {
    "audit": AUDIT_SCHEMA.append(pa.field("date", pa.date32())).append(pa.field("hour", pa.int32())),
    "rollups": ROLLUP_SCHEMA.append(pa.field("date", pa.date32())),
    "license_rollups": LICENSE_ROLLUP_SCHEMA.append(pa.field("date", pa.date32())),
    "licenses": LICENSES_SCHEMA,
    "callers": CALLERS_SCHEMA,
}

_VIEW_NAME = re.compile(r"CREATE\s+(?:OR\s+REPLACE\s+)?VIEW\s+(\w+)", re.IGNORECASE)
_DAYS_MACRO = re.compile(r"CREATE\s+(?:OR\s+REPLACE\s+)?MACRO\s+(?:audit_days|license_raw)\b", re.IGNORECASE)
_AUDIT_FILES_SET = re.compile(r"^\s*SET\s+VARIABLE\s+audit_files\b", re.IGNORECASE | re.MULTILINE)
_DATA_ROOT_SET = re.compile(r"^\s*SET\s+VARIABLE\s+data_root\b", re.IGNORECASE | re.MULTILINE)
_AUDIT_ROOT_SET = re.compile(r"^\s*SET\s+VARIABLE\s+audit_root\b", re.IGNORECASE | re.MULTILINE)
_QUOTED_PARQUET = re.compile(r"""['"]([^'"]+\.parquet)['"]""")


class CorruptFileError(RuntimeError):
    """A Parquet file could not be read; ``path`` names it."""

    def __init__(self, path: str, detail: str):
        super().__init__(f"corrupt or truncated Parquet file {path}: {detail}")
        self.path = path
        self.detail = detail


def audit_dir_of(data_dir: str | Path) -> Path:
    """The absolute audit directory of a data directory (its ``audit_directory`` setting)."""
    return load_settings(Path(data_dir).resolve()).audit_dir.resolve()


def connect(data_dir: str | Path, *, skip_corrupt: bool = False, files: list[str] | None = None,
            rollups: bool = True) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the views of ``views.sql``.

    Nothing is written to the data directory. Creating the ``audit`` view reads every audit
    file's footer (``union_by_name``), so an unreadable one is found here: it raises
    ``CorruptFileError``, or with ``skip_corrupt`` is left out of the view. ``query`` does the
    same for damage found later; ``skipped_files(con)`` lists what was left out. ``files``
    (absolute paths) narrows the ``audit`` view to those files; a missing one counts as
    unreadable. Without ``rollups``, ``summary()`` and the license reports read the raw trail
    only; a damaged rollup file has the same effect instead of being an error (``drop_rollups``).
    """
    root = Path(data_dir).resolve()
    con = duckdb.connect(":memory:")
    con.execute(f"SET file_search_path = {_literal(str(root))}")  # for relative paths an analyst types
    con.execute("SET VARIABLE skip_corrupt = ?", [skip_corrupt])
    con.execute("SET VARIABLE skipped_audit_files = []::VARCHAR[]")
    for statement in duckdb.extract_statements(VIEWS_SQL.read_text(encoding="utf-8")):
        view = _VIEW_NAME.search(statement.query)
        name = view.group(1) if view else None
        if name in ROLLUP_VIEWS and not rollups:
            _create_empty(con, name)
            continue
        while True:
            try:
                con.execute(statement.query)
                if _DATA_ROOT_SET.search(statement.query):
                    con.execute("SET VARIABLE data_root = ?", [os.path.join(root, "")])
                if _AUDIT_ROOT_SET.search(statement.query):
                    con.execute("SET VARIABLE audit_root = ?", [os.path.join(audit_dir_of(root), "")])
                if files is not None and _AUDIT_FILES_SET.search(statement.query):
                    con.execute("SET VARIABLE audit_files = ?::VARCHAR[]", [files])
                break
            except duckdb.Error as exc:
                if _DAYS_MACRO.search(statement.query):
                    # No audit files, or the first one lacks a column it takes (every file's
                    # footer was read fine by the `audit` view): the view has them all.
                    _days_through_view(con)
                    break
                if (name in EMPTY_SCHEMAS and "No files found" in str(exc)
                        and not (name == "audit" and files is not None)):
                    _create_empty(con, name)  # nothing written yet: empty, not an error
                    break
                culprit = _culprit(con, exc)
                if _uses_rollup(con, culprit):
                    drop_rollups(con)  # this statement was about the rollups: done without them
                    break
                if not _leave_out(con, culprit, exc):
                    break  # every audit file was unreadable: the view is now empty
    if not isinstance(_variable(con, "audit_files"), str):
        _days_through_view(con)
    return con


def confine(con: duckdb.DuckDBPyConnection, data_dir: str | Path, **options: Any) -> None:
    """Let ``con`` read the audit directory and the folders of :data:`VIEW_DIRS` and nothing else:
    not ``keys/``, not the registry database, no other file, no extension. ``options`` (DuckDB
    settings such as ``memory_limit``) are set first; then the configuration is locked, so no SQL
    can lift any of it.

    DuckDB's ``allowed_directories`` are prefixes of the path as written, checked before relative
    paths are resolved: each is therefore absolute (the views read absolute paths, see
    ``data_root``) and ends in a separator (``.../audit`` would also allow ``.../audit-old``).
    DuckDB itself refuses paths with ``..`` and files whose real path (symlinks followed) lies
    outside the allowed folders.
    """
    root = Path(data_dir).resolve()
    for name, value in options.items():
        con.execute(f"SET {name} = {_literal(str(value))}")
    folders = [audit_dir_of(root), *(root / folder for folder in VIEW_DIRS)]
    allowed = ", ".join(_literal(os.path.join(folder, "")) for folder in folders)
    con.execute(f"SET allowed_directories = [{allowed}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def query(con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
    """Run one SQL statement and return its result (an empty table for statements without one).

    Raises ``CorruptFileError`` naming the file when a Parquet file cannot be read, or, on a
    connection opened with ``skip_corrupt``, leaves that audit file out and runs the query again.
    A damaged rollup file makes the connection read the raw trail instead, once. Any other
    ``duckdb.Error`` (bad SQL, bad parameters) propagates unchanged.
    """
    while True:
        try:
            relation = con.sql(sql, params=dict(params) if params else None)
            return relation.to_arrow_table() if relation is not None else pa.table({})
        except duckdb.Error as exc:
            culprit = _culprit(con, exc)
            if _uses_rollup(con, culprit):
                drop_rollups(con)
            else:
                _leave_out(con, culprit, exc)  # raises unless an audit file can be left out


def audit_files(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The files the ``audit`` view reads, as absolute paths."""
    source = _variable(con, "audit_files")
    if isinstance(source, list):
        return source
    return [row[0] for row in con.execute("SELECT file FROM glob(getvariable('audit_files')) ORDER BY file").fetchall()]


def empty_views(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Views that had nothing to read when the connection was opened, and so stay empty."""
    # An empty view is a registered Arrow table, which DuckDB lists as a temporary view.
    return {row[0] for row in con.execute(
        "SELECT view_name FROM duckdb_views() WHERE temporary").fetchall()} & set(EMPTY_SCHEMAS)


def is_live(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the connection sees files written after it was opened: no view was empty when it
    opened, and the ``audit`` view still reads its glob (no file was left out). A connection that
    is not live is fixed to what it saw, and should be renewed now and then."""
    return not empty_views(con) and isinstance(_variable(con, "audit_files"), str)


def skipped_files(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Audit files left out of the ``audit`` view because they could not be read."""
    return list(_variable(con, "skipped_audit_files") or [])


def _variable(con: duckdb.DuckDBPyConnection, name: str) -> Any:
    return con.execute("SELECT getvariable(?)", [name]).fetchall()[0][0]


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _create_empty(con: duckdb.DuckDBPyConnection, view: str) -> None:
    con.execute(f"DROP VIEW IF EXISTS {view}")
    con.register(view, EMPTY_SCHEMAS[view].empty_table())


def drop_rollups(con: duckdb.DuckDBPyConnection) -> None:
    """Make ``summary()`` and the license reports read the raw trail only: the rollup views
    empty, their coverage unset. For a damaged rollup file (rollups are derived: the next build
    writes it again)."""
    for view in ROLLUP_VIEWS:
        _create_empty(con, view)
    for variable in ("rollups_from", "rollups_until", "rollups_unsummarised", "license_days_covered"):
        con.execute(f"SET VARIABLE {variable} = NULL")


def _uses_rollup(con: duckdb.DuckDBPyConnection, culprit: CorruptFileError | None) -> bool:
    """Whether the culprit is a rollup file the ``rollups`` view still reads (once dropped, a
    query reading rollup files itself gets the error)."""
    return (culprit is not None and Path(culprit.path).parent.parent.name == ROLLUPS_DIR
            and "rollups" not in empty_views(con))


def _leave_out(con: duckdb.DuckDBPyConnection, culprit: CorruptFileError | None, exc: duckdb.Error) -> bool:
    """Leave the culprit out of the ``audit`` view if allowed, else raise; True while the view
    still has files to read."""
    if culprit is None:
        raise exc
    if not (_variable(con, "skip_corrupt") and culprit.path in audit_files(con)):
        raise culprit from None
    keep = [path for path in audit_files(con) if path != culprit.path]
    con.execute("SET VARIABLE skipped_audit_files = list_append(getvariable('skipped_audit_files'), ?)",
                [culprit.path])
    con.execute("SET VARIABLE audit_files = ?::VARCHAR[]", [keep])
    if not keep:
        _create_empty(con, "audit")
    if _has_macro(con, "audit_days"):
        _days_through_view(con)  # else connect() does it once views.sql has defined the macro
    return bool(keep)


def _days_through_view(con: duckdb.DuckDBPyConnection) -> None:
    """Make ``audit_days`` and ``license_raw`` read the ``audit`` view, once that view is narrowed
    to a list of files or empty: their own glob would read the files left out again, or find no
    files."""
    con.execute("CREATE OR REPLACE MACRO audit_days(days) AS TABLE SELECT date, ts, decision, reason, http_status, "
                "latency_us, host_of(instance) AS host FROM audit WHERE list_contains(days, date)")
    if _has_macro(con, "license_rolled_up"):  # else connect() has yet to reach license_raw in views.sql
        con.execute("CREATE OR REPLACE MACRO license_raw(since, until) AS TABLE SELECT *, host_of(instance) AS host "
                    "FROM audit WHERE date >= CAST(since AS DATE) AND date <= CAST(until AS DATE) "
                    "AND NOT license_rolled_up(date, since, until) AND ts >= since AND ts < until")


def _has_macro(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(con.execute("SELECT 1 FROM duckdb_functions() WHERE function_name = ?", [name]).fetchall())


def _culprit(con: duckdb.DuckDBPyConnection, exc: duckdb.Error) -> CorruptFileError | None:
    """The unreadable file behind ``exc``, if a file is to blame.

    DuckDB names the file for a missing footer or failed decompression, but reports damaged
    page headers and the like as a bare ``duckdb.Error`` without one; then each rollup file and
    each audit file is read in full until the damaged one is found (slow, but only on this
    error path).
    """
    message = str(exc).split("\n")[0]
    named = _QUOTED_PARQUET.search(message)
    if named:
        return CorruptFileError(named.group(1), message)
    if type(exc) is not duckdb.Error:  # parser, binder, conversion... errors are about the SQL
        return None
    rollups = [] if "rollups" in empty_views(con) else [row[0] for row in con.execute(
        f"SELECT file FROM glob(getvariable('data_root') || '{ROLLUPS_DIR}/date=*/*.parquet') ORDER BY file").fetchall()]
    with duckdb.connect(":memory:") as probe:
        for path in rollups + audit_files(con):
            try:
                probe.sql("SELECT * FROM read_parquet(?)", params=[path]).to_arrow_table()
            except duckdb.Error as probe_exc:
                return CorruptFileError(path, str(probe_exc).split("\n")[0])
    return None
