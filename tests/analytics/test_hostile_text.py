"""Caller text in the audit trail cannot reach a terminal or a spreadsheet as commands.

The values are planted by a real request to a real ``portcullis serve`` (a refused body's fields
and ``X-Request-Id`` are audited verbatim, as they should be), and read back through the real
``portcullis`` console script and the dashboard's CSV download.
"""
from __future__ import annotations

import csv
import http.client
import io
import json
import shutil
import subprocess
import unicodedata
from pathlib import Path

import pytest

from dashboard import data
from dashboard.data import TimeRange
from dashboard.views import explorer
from tests.conftest import ServerProcess, make_data_dir

# What a terminal obeys: clear screen, set the window title (OSC ... BEL), backspace, carriage
# return, a bidi override, an 8-bit CSI.
USER_ID = "\x1b[2J\x1b]0;owned\x07\x08\r\u202egnp.exe\x9b1m"
REQUEST_ID = "\u202eid\x85x"  # sent as X-Request-Id: bidi override, C1 next line
FORMULA = '=HYPERLINK("http://evil.example","click")'
COLUMNS = "request_id, feature, user_id, product, http_status, -5 AS n"


def _send(server: ServerProcess, creds, doc: dict, request_id: str | None = None) -> int:
    body = json.dumps(doc).encode()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("POST", "/v1/check")
    for name, value in {"Content-Type": "application/json", **creds.headers("POST", "/v1/check", body)}.items():
        conn.putheader(name, value)
    if request_id is not None:
        conn.putheader("X-Request-Id", request_id.encode("utf-8"))
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    status = conn.getresponse().status
    conn.close()
    return status


@pytest.fixture(scope="module")
def trail(tmp_path_factory) -> Path:
    """A data directory whose Parquet trail holds two refused checks with hostile fields."""
    data_dir = make_data_dir(tmp_path_factory.mktemp("hostile") / "data", environment="prod")
    server = ServerProcess(data_dir.path)
    try:  # unknown field "colour": refused (400), its readable fields audited as sent
        assert _send(server, data_dir.service, {"license_key": "k", "feature": FORMULA, "user_id": USER_ID,
                                                "product": "@SUM(A1)", "colour": 1}, REQUEST_ID) == 400
        assert _send(server, data_dir.service, {"license_key": "k", "feature": "+1+1", "user_id": "\tcmd",
                                                "request_id": "-2+3", "product": "plain", "colour": 1}) == 400
    finally:
        assert server.stop() == 0  # a clean stop converts the spool to Parquet
    assert list(data_dir.path.glob("audit/date=*/hour=*/*.parquet"))
    return data_dir.path


def portcullis(*args: str) -> bytes:
    """The real console script's stdout, as bytes."""
    script = shutil.which("portcullis")
    assert script, "the portcullis console script is installed"
    result = subprocess.run([script, *args], capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def raw_controls(text: str) -> set[str]:
    return {ch for ch in text if ch != "\n" and unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")}


def test_sql_and_report_tables_show_control_characters_as_escapes(trail):
    for out in (portcullis("sql", "-c", f"SELECT {COLUMNS} FROM audit ORDER BY ts", "--data", str(trail)),
                portcullis("report", "audit-page", "--hours", "48", "--data", str(trail))):
        text = out.decode("utf-8")
        assert raw_controls(text) == set()
        assert r"\x1b[2J\x1b]0;owned\x07\x08\r\u202egnp.exe\x9b1m" in text
        assert r"\u202eid\x85x" in text and r"\tcmd" in text


def test_csv_text_cells_cannot_run_as_formulas_and_numbers_stay_numbers(trail):
    out = portcullis("sql", "-c", f"SELECT {COLUMNS} FROM audit ORDER BY ts", "--format", "csv", "--data", str(trail))
    text = out.decode("utf-8")
    assert raw_controls(text) == set()  # printed CSV reaches terminals too
    first, second = csv.DictReader(io.StringIO(text))
    assert (first["feature"], first["product"]) == ("'" + FORMULA, "'@SUM(A1)")
    assert (second["feature"], second["request_id"]) == ("'+1+1", "'-2+3")
    assert second["user_id"] == r"\tcmd"  # escaped, so no longer a tab that starts a formula
    assert first["user_id"] == r"\x1b[2J\x1b]0;owned\x07\x08\r\u202egnp.exe\x9b1m"
    assert (first["n"], first["http_status"], second["product"]) == ("-5", "400", "plain")


def test_json_stays_exact(trail):
    out = portcullis("sql", "-c", f"SELECT {COLUMNS} FROM audit ORDER BY ts", "--format", "json", "--data", str(trail))
    first, second = json.loads(out)["rows"]
    assert (first["user_id"], first["request_id"], first["feature"], first["n"]) == (USER_ID, REQUEST_ID, FORMULA, -5)
    assert second["request_id"] == "-2+3"


def test_the_dashboards_csv_download_is_neutralised_too(trail):
    rows = data.report(str(trail), "audit-page", TimeRange("Last 48 hours", 48, "hour"), page=1, page_size=100)
    text = explorer._csv(rows)
    assert raw_controls(text) == set()
    cells = {(r["request_id"], r["feature"], r["product"]) for r in csv.DictReader(io.StringIO(text))}
    assert cells == {(r"\u202eid\x85x", "'" + FORMULA, "'@SUM(A1)"), ("'-2+3", "'+1+1", "plain")}
