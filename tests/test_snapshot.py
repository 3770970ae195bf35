"""Registry snapshots: exact schemas, atomic replacement, required values enforced."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pyarrow.parquet as pq
import pytest

from gateway.snapshot import (
    CALLERS_SCHEMA, LICENSES_SCHEMA, callers_path, licenses_path, write_callers_snapshot, write_licenses_snapshot,
)

WHEN = datetime(2026, 5, 1, 12, tzinfo=timezone(timedelta(hours=2)))


def license_row(**fields):
    return {"license_id": "lic_a", "key_fp": "0123456789abcdef", "customer": "acme", "product": "suite",
            "tier": "pro", "status": "active", "features": ["export"], "seats_limit": 5,
            "environments": ["prod"], "starts_at": WHEN, "expires_at": None, "created_at": WHEN,
            "updated_at": WHEN, "metadata": {"owner": "sales"}, **fields}


def test_licenses_snapshot_in_its_schema_with_utc_times_and_json_metadata(tmp_path):
    path = write_licenses_snapshot(tmp_path, [license_row(), license_row(license_id="lic_b", metadata='{"x": 1}')])
    assert path == licenses_path(tmp_path) == tmp_path / "snapshots" / "licenses.parquet"
    table = pq.read_table(path)
    assert table.schema.equals(LICENSES_SCHEMA)
    first, second = table.to_pylist()
    assert first["created_at"] == WHEN and first["created_at"].utcoffset() == timedelta(0)
    assert first["expires_at"] is None
    assert json.loads(first["metadata"]) == {"owner": "sales"} and second["metadata"] == '{"x": 1}'


def test_callers_snapshot_in_its_schema(tmp_path):
    path = write_callers_snapshot(tmp_path, [{"caller_id": "billing", "key_ids": ["pk_1", "pk_2"], "admin": True,
                                              "rate_limit_rps": 100.0, "products": ["*"]}])
    assert path == callers_path(tmp_path)
    table = pq.read_table(path)
    assert table.schema.equals(CALLERS_SCHEMA)
    assert table.to_pylist()[0]["key_ids"] == ["pk_1", "pk_2"]


def test_a_missing_required_value_is_refused_and_the_old_snapshot_stays(tmp_path):
    write_licenses_snapshot(tmp_path, [license_row()])
    with pytest.raises(ValueError, match="'key_fp' must not be null"):
        write_licenses_snapshot(tmp_path, [license_row(key_fp=None)])
    assert pq.read_table(licenses_path(tmp_path)).num_rows == 1
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == ["licenses.parquet"]


def test_an_empty_registry_gives_an_empty_snapshot(tmp_path):
    assert pq.read_table(write_licenses_snapshot(tmp_path, [])).num_rows == 0
