"""Registry snapshots: the licenses and callers as Parquet, the seam between registry and analytics.

The registry lives in SQLite, which DuckDB cannot read here (its sqlite extension is not
installable offline), so the registry writes a snapshot whenever licenses or callers change and
the ``licenses`` / ``callers`` views read it. Snapshots carry ``key_fp``, never a key or a key
hash, and callers' key ids, never their secrets.

Writes are atomic (temp file, fsync, rename, directory fsync): a reader sees the old snapshot or
the new one, never half of one. Columns may only be appended, like the audit schema.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

_TS = pa.timestamp("us", tz="UTC")
_STRINGS = pa.list_(pa.string())

LICENSES_SCHEMA = pa.schema(
    [
        pa.field("license_id", pa.string(), nullable=False),
        pa.field("key_fp", pa.string(), nullable=False),
        pa.field("customer", pa.string(), nullable=False),
        pa.field("product", pa.string()),
        pa.field("tier", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("features", _STRINGS),  # extras beyond the tier
        pa.field("seats_limit", pa.int32()),  # null: the tier's limit (or unlimited)
        pa.field("environments", _STRINGS),
        pa.field("starts_at", _TS),
        pa.field("expires_at", _TS),  # null: perpetual
        pa.field("created_at", _TS, nullable=False),
        pa.field("updated_at", _TS, nullable=False),
        pa.field("metadata", pa.string()),  # JSON text
    ]
)

CALLERS_SCHEMA = pa.schema(
    [
        pa.field("caller_id", pa.string(), nullable=False),
        pa.field("key_ids", _STRINGS),
        pa.field("mtls_identities", _STRINGS),
        pa.field("products", _STRINGS),
        pa.field("features", _STRINGS),
        pa.field("environments", _STRINGS),
        pa.field("admin", pa.bool_(), nullable=False),
        pa.field("rate_limit_rps", pa.float64()),
    ]
)

SNAPSHOT_DIR = "snapshots"


def licenses_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / SNAPSHOT_DIR / "licenses.parquet"


def callers_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / SNAPSHOT_DIR / "callers.parquet"


def write_licenses_snapshot(data_dir: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Replace the licenses snapshot. ``metadata`` may be a mapping (stored as JSON) or JSON text;
    timestamps are timezone-aware datetimes or None."""
    prepared = [_with_json_metadata(row) for row in rows]
    return _write_atomic(licenses_path(data_dir), to_table(prepared, LICENSES_SCHEMA))


def write_callers_snapshot(data_dir: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Replace the callers snapshot."""
    return _write_atomic(callers_path(data_dir), to_table(list(rows), CALLERS_SCHEMA))


def to_table(rows: list[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows as a table of exactly ``schema``; a missing required value is refused by name, so a
    snapshot never contradicts its own schema. Keys not in the schema are ignored."""
    table = pa.Table.from_pylist(rows, schema=schema)
    for field in schema:
        if not field.nullable and table.column(field.name).null_count:
            raise ValueError(f"snapshot column {field.name!r} must not be null")
    return table


def _with_json_metadata(row: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = row.get("metadata")
    if metadata is None or isinstance(metadata, str):
        return row
    return {**row, "metadata": json.dumps(metadata, sort_keys=True, default=str)}


def _write_atomic(path: Path, table: pa.Table) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # One temp name per process: two writers never interleave bytes in the same temp file.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh, compression="zstd")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path
