"""The report registry: every report is a file, every parameter is used, bad input is refused."""
from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest

from analytics.registry import REPORTS, REPORTS_DIR, ReportError, get_report


def test_every_sql_file_is_registered_and_every_report_has_a_file():
    assert {p.stem for p in REPORTS_DIR.glob("*.sql")} == set(REPORTS)


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_report_parameters_are_exactly_the_named_parameters_of_its_sql(name: str):
    report = REPORTS[name]
    used = set(re.findall(r"\$(\w+)", re.sub(r"--[^\n]*", "", report.sql)))
    assert used == {p.name for p in report.params}
    assert report.title and report.description


def test_unknown_report_lists_the_reports():
    with pytest.raises(ReportError) as caught:
        get_report("nope")
    assert all(name in str(caught.value) for name in REPORTS)


def test_bind_fills_defaults_and_the_current_time():
    bound = get_report("expiring").bind()
    assert bound["days"] == 30
    assert bound["now"].tzinfo is not None
    assert abs((datetime.now(timezone.utc) - bound["now"]).total_seconds()) < 60


def test_naive_now_is_utc():
    assert get_report("trends").bind(now=datetime(2026, 1, 1))["now"] == datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("name, params, message", [
    ("trends", {"hours": 3}, "has no parameter hours"),
    ("trends", {"bucket": "week"}, "must be one of hour, day"),
    ("expiring", {"days": "30"}, "must be int"),
    ("expiring", {"days": 0}, "at least 1"),
    ("expiring", {"now": "yesterday"}, "must be a datetime"),
])
def test_bad_parameters_are_refused(name: str, params: dict, message: str):
    with pytest.raises(ReportError, match=message):
        get_report(name).bind(**params)


def test_parameters_parse_from_text():
    report = get_report("stale-keys")
    params = {p.name: p for p in report.params}
    assert params["min_calls"].parse("5") == 5
    assert params["now"].parse("2026-01-01T00:00:00+00:00") == datetime(2026, 1, 1, tzinfo=timezone.utc)
    with pytest.raises(ReportError, match="cannot read 'x' as int"):
        params["days"].parse("x")
