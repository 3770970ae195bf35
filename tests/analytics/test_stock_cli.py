"""analytics/views.sql in the stock DuckDB CLI an analyst installs (`pip install duckdb-cli`, the
version the README names), over a trail the real audit writer wrote: it must open there, and
give what `portcullis sql` and the reports give through the Python package."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

from analytics.db import VIEWS_SQL, connect, query
from analytics.registry import REPORTS, run_report
from tests.conftest import portcullis

from .conftest import NOW

REPO = Path(__file__).resolve().parents[2]


def stock_cli(data: Path, sql: str) -> list[dict]:
    """Run ``duckdb -init analytics/views.sql -json -c SQL`` in the data directory, as the README says."""
    result = subprocess.run([sys.executable, "-m", "duckdb_cli", "-init", str(VIEWS_SQL), "-json", "-c", sql],
                            cwd=data, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "Error" not in result.stderr, result.stderr
    return json.loads(result.stdout or "[]")


def trends_in_cli(data: Path) -> list[dict]:
    rows = stock_cli(data, f"PREPARE trends AS {REPORTS['trends'].sql};\n"
                           f"EXECUTE trends(bucket := 'hour', days := 7, now := TIMESTAMPTZ '{NOW.isoformat()}');")
    return [{**row, "bucket": datetime.fromisoformat(row["bucket"])} for row in rows]


def test_the_cli_is_the_version_the_readme_names() -> None:
    cli = subprocess.run([sys.executable, "-m", "duckdb_cli", "--version"], capture_output=True, text=True, timeout=60)
    assert cli.stdout.startswith(f"v{version('duckdb-cli')}")
    assert f"duckdb-cli=={version('duckdb-cli')}" in (REPO / "README.md").read_text()


def test_views_open_in_the_stock_cli_and_agree_with_python(written: Path) -> None:
    con = connect(written)
    for sql in ("SELECT decision, count(*) AS n FROM audit GROUP BY ALL ORDER BY decision",
                "SELECT strftime(ts, '%Y-%m-%dT%H:%M:%S.%f') AS ts, decision_id, date::VARCHAR AS date, hour "
                "FROM audit ORDER BY decision_id",
                "SELECT license_id, status, expires_at::VARCHAR AS expires_at FROM licenses ORDER BY license_id",
                "SELECT count(*) AS n FROM rollups"):
        assert stock_cli(written, sql) == query(con, sql).to_pylist(), sql
    assert stock_cli(written, "SELECT count(*) AS n FROM audit")[0]["n"] > 100

    expected = run_report(con, "trends", bucket="hour", days=7, now=NOW).to_pylist()
    assert expected and trends_in_cli(written) == expected  # summary() over the raw trail

    built = portcullis("rollup", "--data", str(written), "--json")
    assert built.returncode == 0, built.stderr
    assert stock_cli(written, "SELECT count(*) AS n FROM rollups WHERE kind = 'covered'")[0]["n"] > 0
    assert trends_in_cli(written) == expected  # summary() from the rollups


def test_views_open_in_the_stock_cli_before_any_rollup_or_decision_of_a_day(written: Path) -> None:
    """A report window reaching days without any audit file, and no rollups yet: no error."""
    rows = stock_cli(written, "SELECT count(*) AS n FROM audit_days([DATE '2020-01-01', DATE '2026-06-15'])")
    assert rows == query(connect(written), "SELECT count(*) AS n FROM audit WHERE date = DATE '2026-06-15'").to_pylist()
