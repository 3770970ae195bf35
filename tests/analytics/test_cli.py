"""``portcullis report`` and ``portcullis sql`` through click's runner, over real files."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from analytics.registry import REPORTS
from gateway.cli import main

from .conftest import NOW, planted_records


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args: str, stdin: str | None = None):
        return runner.invoke(main, list(args), input=stdin, catch_exceptions=False)

    return invoke


def test_report_alone_lists_the_reports(run, empty_data: Path):
    result = run("report", "--data", str(empty_data))
    assert result.exit_code == 0
    assert all(name in result.output for name in REPORTS)


def test_unknown_report_is_a_usage_error_listing_the_reports(run, planted: Path):
    result = run("report", "nope", "--data", str(planted))
    assert result.exit_code == 2
    assert "unknown report 'nope'" in result.output and "stale-keys" in result.output
    assert "Traceback" not in result.output


def test_option_a_report_does_not_take_is_refused(run, planted: Path):
    result = run("report", "trends", "--hours", "3", "--data", str(planted))
    assert result.exit_code == 2 and "has no parameter hours" in result.output


def test_report_as_json(run, planted: Path):
    result = run("report", "expiring", "--now", NOW.isoformat(), "--format", "json", "--data", str(planted))
    assert result.exit_code == 0
    doc = json.loads(result.stdout)  # progress of the rollup build is on stderr
    assert doc["report"] == "expiring" and doc["params"]["days"] == 30
    assert doc["params"]["now"] == NOW.isoformat()
    assert [r["license_id"] for r in doc["rows"]] == ["lic_soon", "lic_suspended_soon"]


def test_report_as_csv_with_options(run, planted: Path):
    result = run("report", "unauthorized", "--hours", "96", "-p", "probe_keys=20", "--now", NOW.isoformat(),
                 "--format", "csv", "--data", str(planted))
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert {r["kind"] for r in rows} == {"refused"}  # 12 distinct probes < 20
    assert {r["calls"] for r in rows if r["auth_error"] == "bad_signature"} == {"4"}


def test_report_as_table(run, planted: Path):
    result = run("report", "stale-keys", "--now", NOW.isoformat(), "--data", str(planted))
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0].split()[:2] == ["kind", "license_id"]
    assert "never_used" in result.output and "legacy" in result.output


def test_reports_on_an_empty_data_directory(run, empty_data: Path):
    for name in REPORTS:
        result = run("report", name, "--format", "json", "--data", str(empty_data))
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["columns"]


def test_corrupt_file_is_named_and_can_be_skipped(run, planted: Path):
    victim = sorted((planted / "audit").glob("date=*/hour=*/*.parquet"))[-1]
    victim.write_bytes(b"PAR1 not really")
    result = run("report", "trends", "--data", str(planted))
    assert result.exit_code == 1
    assert str(victim) in result.output and "--skip-corrupt" in result.output
    assert "Traceback" not in result.output
    result = run("report", "trends", "--skip-corrupt", "--data", str(planted))
    assert result.exit_code == 0
    assert f"skipped unreadable audit file {victim}" in result.output


def test_sql_command(run, planted: Path):
    result = run("sql", "-c", "SELECT count(*) AS n FROM audit; SELECT 2 AS two", "--format", "json",
                 "--data", str(planted))
    assert result.exit_code == 0
    first, second = (json.loads(line) for line in result.output.splitlines())
    assert first["rows"] == [{"n": len(planted_records())}] and second["rows"] == [{"two": 2}]


def test_bad_sql_is_one_line_and_a_non_zero_exit(run, planted: Path):
    result = run("sql", "-c", "SELEC nonsense", "--data", str(planted))
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error: Parser Error")
    assert len(result.output.strip().splitlines()) == 1


def test_sql_reads_statements_from_stdin_until_semicolons(run, planted: Path):
    script = "SELECT count(*)\n  AS n FROM licenses;\nSELEC 1;\nSELECT 'last' AS word"
    result = run("sql", "--format", "csv", "--data", str(planted), stdin=script)
    assert result.exit_code == 1  # one statement failed; the others still ran
    assert "n\n10" in result.output and "word\nlast" in result.output
    assert "error: Parser Error" in result.output


def test_sql_on_an_empty_data_directory(run, empty_data: Path):
    result = run("sql", "-c", "SELECT count(*) AS n FROM audit", "--format", "csv", "--data", str(empty_data))
    assert (result.exit_code, result.output) == (0, "n\n0\n")


def test_a_missing_data_directory_is_an_error_not_an_empty_history(run, tmp_path: Path):
    result = run("report", "expiring", "--data", str(tmp_path / "typo"))
    assert result.exit_code == 1 and "does not exist" in result.output
