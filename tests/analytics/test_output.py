"""Rendering results: pure functions of an Arrow table."""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from analytics.output import render

RESULT = pa.table({
    "name": ["a", None],
    "when": pa.array([datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), None], pa.timestamp("us", tz="UTC")),
    "share": [12.5, 1 / 3],
    "callers": [["x", "y"], []],
})


def test_json_is_one_object_with_columns_rows_and_meta():
    doc = json.loads(render(RESULT, "json", report="r", params={"days": 3}))
    assert doc["report"] == "r" and doc["params"] == {"days": 3}
    assert doc["columns"] == ["name", "when", "share", "callers"]
    assert doc["rows"][0] == {"name": "a", "when": "2026-01-02T03:04:05+00:00", "share": 12.5, "callers": ["x", "y"]}
    assert doc["rows"][1]["name"] is None


def test_csv_has_a_header_iso_times_and_json_lists():
    rows = list(csv.reader(io.StringIO(render(RESULT, "csv"))))
    assert rows[0] == ["name", "when", "share", "callers"]
    assert rows[1] == ["a", "2026-01-02T03:04:05+00:00", "12.5", '["x", "y"]']
    assert rows[2][:2] == ["", ""]


def test_table_is_aligned_text():
    lines = render(RESULT, "table").splitlines()
    assert lines[0].split() == ["name", "when", "share", "callers"]
    assert "2026-01-02 03:04:05" in lines[1] and "12.5" in lines[1] and "x, y" in lines[1]
    assert "0.33" in lines[2]


def test_empty_result_and_unknown_format():
    assert render(RESULT.slice(0, 0), "table") == "(none)"
    assert render(RESULT.slice(0, 0), "csv") == "name,when,share,callers"
    with pytest.raises(ValueError, match="formats: table, csv, json"):
        render(RESULT, "xml")
