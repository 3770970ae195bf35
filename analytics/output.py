r"""Query results as text: an aligned table for people, CSV and JSON for programs.

Pure functions of an Arrow table, shared by ``portcullis report`` and ``portcullis sql``.

Audit records hold what callers sent, verbatim (a refused body's fields, ``X-Request-Id``), so
every output is safe for where it lands: table and CSV text show what a terminal would obey
(escape sequences, bell, backspace, carriage return, bidi overrides) as visible ``\x1b`` and
``\u202e`` escapes, and CSV text cells a spreadsheet would run as a formula get a leading ``'``
(OWASP's CSV-injection advice). JSON stays exact: its own escaping suffices, so programs that
need the values as sent read JSON.
"""
from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa

from gateway.cli.common import table as text_table, terminal_text

FORMATS = ("table", "csv", "json")
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def render(result: pa.Table, fmt: str, **meta: Any) -> str:
    """``result`` in ``fmt``; ``meta`` (e.g. report name and parameters) goes into JSON only,
    which is one object: ``{**meta, "columns": [...], "rows": [{...}, ...]}``."""
    rows = result.to_pylist()
    if fmt == "json":
        return json.dumps({**meta, "columns": result.column_names, "rows": rows}, default=_json_value)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(map(_csv_text, result.column_names))
        writer.writerows([_csv_cell(row[c]) for c in result.column_names] for row in rows)
        return out.getvalue().rstrip("\n")
    if fmt == "table":  # the table escapes what a terminal would obey
        cells = [{c: _text_cell(row[c]) for c in result.column_names} for row in rows]
        return text_table(cells, result.column_names)
    raise ValueError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")


def spreadsheet_text(text: str) -> str:
    """A CSV text cell no spreadsheet runs as a formula: one that starts with ``= + - @``, a tab
    or a carriage return gets a leading ``'``. Only text: numbers are written as numbers."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _json_value(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return str(value)


def _csv_text(text: str) -> str:
    """CSV lands in spreadsheets and, printed, on terminals: both escapes apply (an escaped
    control character cannot start a formula, nor end a row)."""
    return spreadsheet_text(terminal_text(text))


def _csv_cell(value: Any) -> Any:
    if isinstance(value, str):
        return _csv_text(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=_json_value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return "" if value is None else value


def _text_cell(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    if isinstance(value, list):
        return ", ".join("" if v is None else str(v) for v in value)
    return str(value)
