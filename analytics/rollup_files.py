"""What the two kinds of rollup files share: where a day's files go, how the audit files they
summarise are fingerprinted, and how a file is written so that a reader never sees half of it."""
from __future__ import annotations

import hashlib
import json
import os
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from analytics.db import ROLLUPS_DIR
from gateway.audit.parquet import TMP_SUFFIX, install, make_dirs


def day_dir(root: Path, day: date) -> Path:
    return root / ROLLUPS_DIR / f"date={day.isoformat()}"


def digest(paths: list[str]) -> str:
    """A fingerprint of audit files. Audit files are never rewritten in place (new data gets a
    new name), so their names say whether a summary of them still holds."""
    return hashlib.sha256("\n".join(sorted(Path(p).name for p in paths)).encode()).hexdigest()[:32]


def write_atomic(path: Path, table: pa.Table, meta_key: bytes, meta: dict) -> None:
    """Write ``table`` with ``meta`` (JSON) in its schema metadata: temp file, fsync, rename."""
    table = table.replace_schema_metadata({meta_key: json.dumps(meta).encode()})
    make_dirs(path.parent)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    pq.write_table(table, tmp, compression="zstd", write_page_checksum=True)  # bit flips found on reading
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    install(tmp, path)


def read_meta(path: Path, meta_key: bytes) -> dict | None:
    """The JSON metadata ``write_atomic`` put in ``path``; None if missing or unreadable."""
    try:
        return json.loads((pq.read_schema(path).metadata or {})[meta_key])
    except (OSError, KeyError, ValueError, TypeError, pa.ArrowException):
        return None
