"""The figure builders, KPI deltas, report frames and the SQL box's guard, without a Streamlit server."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from dashboard import figures, sqlbox
from dashboard.data import RANGES, frame
from dashboard.kpis import has_data, kpis

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)


def trends(rows):
    return pd.DataFrame(rows, columns=["bucket", "decision", "reason", "calls"])


def unauthorized(rows):
    return pd.DataFrame(rows, columns=["kind", "caller_id", "remote_addr", "http_status", "reason", "auth_error",
                                       "calls", "distinct_keys", "first_seen", "last_seen"])


def stale_keys(rows):
    return pd.DataFrame(rows, columns=["kind", "license_id", "key_fp", "customer", "presented"])


def forecast(rows, now=T0):
    """``quota-forecast`` rows (license, used %, runs out) of a 1,000-unit monthly quota."""
    return pd.DataFrame([{"license_id": lic, "customer": f"cust-{lic}", "tier": "pro", "feature": "export",
                          "period": "month", "period_start": now - 10 * 24 * HOUR,
                          "period_end": now + 20 * 24 * HOUR, "quota_used": int(10 * pct), "quota_limit": 1000,
                          "used_pct": pct, "burn_per_day": pct, "exhausts_at": None, "runs_out": runs_out,
                          "last_seen": now} for lic, pct, runs_out in rows],
                        columns=["license_id", "customer", "tier", "feature", "period", "period_start", "period_end",
                                 "quota_used", "quota_limit", "used_pct", "burn_per_day", "exhausts_at", "runs_out",
                                 "last_seen"])


def activity(rows):
    """``customer-activity`` rows: (bucket, license, decision, reason, caller, calls, seats used, quota used)."""
    return pd.DataFrame([{"bucket": b, "license_id": lic, "feature": "export", "decision": d, "reason": r,
                          "caller_id": c, "environment": "prod", "calls": n, "seats_used": seats,
                          "seats_limit": 10 if seats is not None else None, "quota_used": quota,
                          "quota_limit": 1000 if quota is not None else None}
                         for b, lic, d, r, c, n, seats, quota in rows],
                        columns=["bucket", "license_id", "feature", "decision", "reason", "caller_id", "environment",
                                 "calls", "seats_used", "seats_limit", "quota_used", "quota_limit"])


TRENDS = trends([
    (T0, "allow", "VALID", 90), (T0, "alert", "EXPIRING_SOON", 5), (T0, "deny", "LICENSE_REVOKED", 3),
    (T0, "deny", "UNAUTHENTICATED", 2), (T0 + HOUR, "allow", "VALID", 80), (T0 + HOUR, "deny", "RATE_LIMITED", 7),
])


def test_decisions_over_time_has_one_stacked_trace_per_outcome_in_its_colour():
    fig = figures.decisions_over_time(TRENDS)
    assert [t.name for t in fig.data] == ["allow", "alert", "deny"]
    assert [t.marker.color for t in fig.data] == [figures.OUTCOME_COLOURS[o] for o in figures.OUTCOMES]
    assert fig.layout.barmode == "stack"
    totals = {t.name: sum(t.y) for t in fig.data}
    assert totals == {"allow": 170, "alert": 5, "deny": 12}
    assert list(fig.data[2].y) == [5, 7]  # the two deny reasons of the first hour are summed


def test_an_outcome_without_decisions_keeps_its_trace():
    fig = figures.decisions_over_time(TRENDS[TRENDS["decision"] == "allow"])
    assert [t.name for t in fig.data] == ["allow", "alert", "deny"]
    assert len(fig.data[1].x) == len(fig.data[2].x) == 0


def test_latency_is_drawn_in_milliseconds():
    latency = pd.DataFrame({"bucket": [T0, T0 + HOUR], "calls": [10, 10], "p50_us": [200.0, 300.0],
                            "p95_us": [900.0, 1000.0], "p99_us": [2500.0, 4000.0], "max_us": [9000, 9000]})
    fig = figures.latency_percentiles(latency)
    assert [t.name for t in fig.data] == ["p50", "p95", "p99"]
    assert list(fig.data[2].y) == [2.5, 4.0]


def test_refusals_over_time_keeps_only_401_403_429_reasons():
    fig = figures.refusals_over_time(TRENDS)
    assert [t.name for t in fig.data] == ["UNAUTHENTICATED", "RATE_LIMITED"]
    assert sum(sum(t.y) for t in fig.data) == 9


def test_top_offenders_names_unauthenticated_sources_by_address_loudest_first():
    df = unauthorized([
        ("refused", None, "203.0.113.7", 401, "UNAUTHENTICATED", "bad_signature", 40, None, T0, T0),
        ("refused", None, "203.0.113.7", 401, "UNAUTHENTICATED", "stale_timestamp", 15, None, T0, T0),
        ("refused", "bulk-sync", "10.0.0.11", 429, "RATE_LIMITED", None, 30, None, T0, T0),
        ("key_probing", "scanner", "10.0.0.10", 200, "KEY_NOT_FOUND", None, 500, 60, T0, T0),
    ])
    fig = figures.top_offenders(df)
    assert [t.name for t in fig.data] == ["UNAUTHENTICATED", "RATE_LIMITED"]
    assert list(fig.data[0].y) == ["unauthenticated @ 203.0.113.7"] and list(fig.data[0].x) == [55]
    assert list(fig.layout.yaxis.categoryarray) == ["bulk-sync", "unauthenticated @ 203.0.113.7"]  # top = last
    errors = figures.auth_errors(df)
    assert list(errors.data[0].x) == ["bad_signature", "stale_timestamp"] and list(errors.data[0].y) == [40, 15]


def test_keys_are_coloured_by_severity():
    df = stale_keys([("stale", "l1", "aa", "acme", None), ("never_used", "l2", "bb", "acme", None),
                     ("revoked", "l3", "cc", "initech", 12), ("unknown", None, "dd", None, 40)])
    kinds = figures.keys_by_kind(df)
    assert list(kinds.data[0].x) == ["never_used", "stale", "revoked", "unknown"]
    assert list(kinds.data[0].marker.color) == [figures.OUTCOME_COLOURS[c] for c in ("alert", "alert", "deny", "deny")]
    zombies = figures.zombie_keys(df)
    assert list(zombies.data[0].y) == ["unknown · dd · no license", "revoked · cc · initech"]
    assert zombies.data[0].marker.color == figures.OUTCOME_COLOURS["deny"]


@pytest.mark.parametrize("pct, colour", [(10, "allow"), (79.9, "allow"), (80, "alert"), (100, "alert"), (100.1, "deny")])
def test_utilisation_colour(pct, colour):
    assert figures.utilisation_colour(pct) == figures.OUTCOME_COLOURS[colour]


def test_utilisation_puts_the_fullest_on_top_and_marks_the_limit():
    seats = pd.DataFrame({"license_id": ["a", "b", "c"], "customer": ["x", "y", "z"],
                          "utilisation_pct": [50.0, 120.0, 85.0]})
    fig = figures.utilisation(seats, "Seat utilisation", ["customer", "license_id"])
    assert list(fig.data[0].marker.color) == [figures.OUTCOME_COLOURS[c] for c in ("deny", "alert", "allow")]
    assert list(fig.layout.yaxis.categoryarray) == ["x · a", "z · c", "y · b"]
    assert fig.layout.shapes[0].x0 == 100


@pytest.mark.parametrize("days, colour", [(0, "deny"), (7, "deny"), (8, "alert"), (30, "alert"), (31, "allow")])
def test_expiry_colour(days, colour):
    assert figures.expiry_colour(days) == figures.OUTCOME_COLOURS[colour]


EMPTY = {
    "decisions_over_time": lambda: figures.decisions_over_time(trends([])),
    "latency_percentiles": lambda: figures.latency_percentiles(pd.DataFrame(columns=["bucket", "p50_us", "p95_us", "p99_us"])),
    "refusals_over_time": lambda: figures.refusals_over_time(trends([])),
    "refusals_without_refusals": lambda: figures.refusals_over_time(TRENDS[TRENDS["decision"] != "deny"]),
    "top_offenders": lambda: figures.top_offenders(unauthorized([])),
    "auth_errors": lambda: figures.auth_errors(unauthorized([])),
    "keys_by_kind": lambda: figures.keys_by_kind(stale_keys([])),
    "zombie_keys": lambda: figures.zombie_keys(stale_keys([("stale", "l1", "aa", "acme", None)])),
    "utilisation": lambda: figures.utilisation(pd.DataFrame(columns=["customer", "utilisation_pct"]), "Seats", ["customer"]),
    "expiry_timeline": lambda: figures.expiry_timeline(
        pd.DataFrame(columns=["license_id", "customer", "expires_at", "days_left", "calls_7d"])),
    "quota_at_risk": lambda: figures.quota_at_risk(forecast([("l1", 10.0, False)])),
    "seats_over_time": lambda: figures.seats_over_time(activity([])),
    "quota_burn": lambda: figures.quota_burn(activity([]), forecast([])),
    "reasons_by_outcome": lambda: figures.reasons_by_outcome(activity([])),
    "callers_and_environments": lambda: figures.callers_and_environments(activity([])),
}


@pytest.mark.parametrize("builder", list(EMPTY))
def test_no_rows_give_a_friendly_empty_figure(builder):
    fig = EMPTY[builder]()
    assert not fig.data
    assert fig.layout.title.text
    assert fig.layout.annotations[0].text.startswith("No ")


def overview(current, previous):
    columns = ["decisions", "denied", "deny_pct", "alerts", "p99_us", "auth_failures"]
    return pd.DataFrame([["current", *current], ["previous", *previous]], columns=["period", *columns])


def test_kpis_compare_with_the_previous_period_and_bad_news_is_inverse():
    shown = {k.label: k for k in kpis(overview((1100, 110, 10.0, 30, 2500.0, 8), (1000, 50, 5.0, 40, 2000.0, 4)))}
    assert shown["Decisions"].value == "1,100"
    assert shown["Decisions"].delta == "+100 (+10.0%)" and shown["Decisions"].delta_color == "normal"
    assert shown["Deny rate"].value == "10.00 %" and shown["Deny rate"].delta.startswith("+5.00 pp")
    assert shown["Alerts"].delta.startswith("-10 (-25.0%)")
    assert shown["p99 latency"].value == "2.50 ms" and shown["p99 latency"].delta.startswith("+0.50 ms")
    assert shown["Auth failures"].delta.startswith("+4 (+100.0%)")
    assert {k.label for k in shown.values() if k.delta_color == "inverse"} == {
        "Deny rate", "Alerts", "p99 latency", "Auth failures"}


def test_kpis_without_a_previous_period_show_no_delta():
    nan = float("nan")
    shown = kpis(overview((10, 0, 0.0, 0, 300.0, 0), (0, 0, nan, 0, nan, 0)))
    assert [k.delta for k in shown] == [None] * 5
    assert has_data(overview((10, 0, 0.0, 0, 300.0, 0), (0, 0, nan, 0, nan, 0)))
    assert not has_data(overview((0, 0, nan, 0, nan, 0), (0, 0, nan, 0, nan, 0)))
    assert [k.value for k in kpis(overview((0, 0, nan, 0, nan, 0), (0, 0, nan, 0, nan, 0)))][1:4:2] == ["–", "–"]


def test_decimal_counts_become_numbers_plotly_can_rank():
    table = pa.table({"presented": pa.array([3, None, 12], pa.decimal128(38, 0)),
                      "share": pa.array([Decimal("1.50"), Decimal("2.25"), None], pa.decimal128(10, 2)), "key_fp": ["a", "b", "c"]})
    df = frame(table)
    assert str(df["presented"].dtype) in ("int64", "float64") and df["share"].dtype == "float64"
    assert df.nlargest(1, "presented")["key_fp"].tolist() == ["c"]


def test_time_ranges_fill_only_the_parameters_a_report_declares():
    week = RANGES["Last 7 days"]
    assert week.params_for("trends") == {"bucket": "hour", "days": 7}
    assert week.params_for("unauthorized") == {"hours": 168}
    assert RANGES["Last 24 hours"].params_for("overview") == {"hours": 24}
    assert RANGES["Last 30 days"].params_for("latency") == {"bucket": "day", "days": 30}


@pytest.mark.parametrize("sql", ["SELECT 1", "select 1;", "WITH a AS (SELECT 1 AS x) SELECT x FROM a",
                                 "FROM audit", "DESCRIBE audit", "  -- comment\nSELECT 2  "])
def test_sql_box_accepts_one_query(sql):
    assert sqlbox.check_select(sql)


@pytest.mark.parametrize("sql, why", [
    ("", "enter a SELECT"), ("   ;  ", "enter a SELECT"),
    ("SELECT 1; SELECT 2", "only one statement"), ("SELECT 1; DROP VIEW audit", "only one statement"),
    ("DROP VIEW audit", "not DROP"), ("INSERT INTO t VALUES (1)", "not INSERT"),
    ("WITH a AS (SELECT 1) INSERT INTO t SELECT * FROM a", "not INSERT"),
    ("SET enable_external_access = true", "not SET"), ("ATTACH 'x.db'", "not ATTACH"),
    ("COPY (SELECT 1) TO '/tmp/x.csv'", "not COPY"), ("PRAGMA version", "not PRAGMA"),
    ("SELEC 1", "cannot parse"),
])
def test_sql_box_refuses_anything_else(sql, why):
    with pytest.raises(sqlbox.RefusedQuery, match=why):
        sqlbox.check_select(sql)


def test_sql_box_stops_at_the_row_limit():
    con = duckdb.connect()
    rows, truncated = sqlbox.run(con, "SELECT * FROM range(10)", limit=3)
    assert list(rows.iloc[:, 0]) == [0, 1, 2] and truncated
    rows, truncated = sqlbox.run(con, "SELECT * FROM range(3)", limit=3)
    assert len(rows) == 3 and not truncated


def axis_span(fig) -> pd.Timedelta:
    low, high = (pd.Timestamp(x) for x in fig.layout.xaxis.range)
    return high - low


def test_one_bucket_still_gets_an_axis_of_hours_not_milliseconds():
    """All records in one hour: the axis spans the hour before and after, not a sub-millisecond
    sliver around one instant; the latency percentiles are drawn as points."""
    one = TRENDS[TRENDS["bucket"] == T0]
    latency = pd.DataFrame({"bucket": [T0], "calls": [10], "p50_us": [200.0], "p95_us": [900.0], "p99_us": [2500.0],
                            "max_us": [9000]})
    for fig in (figures.decisions_over_time(one, "hour", now=T0 + 5 * HOUR),
                figures.latency_percentiles(latency, "hour", now=T0 + 5 * HOUR)):
        assert axis_span(fig) == 2 * HOUR and fig.layout.xaxis.type == "date"
    assert all("markers" in t.mode for t in figures.latency_percentiles(latency, "hour").data)
    day = figures.decisions_over_time(one, "day", now=T0 + 30 * 24 * HOUR)
    assert axis_span(day) == timedelta(days=2)


def test_the_bucket_still_filling_is_marked_and_faded():
    fig = figures.decisions_over_time(TRENDS, "hour", now=T0 + HOUR + timedelta(minutes=20))
    assert [s.x0 for s in fig.layout.shapes] == [pd.Timestamp(T0 + HOUR) - HOUR / 2]
    assert fig.layout.annotations[0].text == "this hour so far"
    assert list(fig.data[0].marker.opacity) == [1, 0.4]  # allow: the whole hour, then the partial one
    whole = figures.decisions_over_time(TRENDS, "hour", now=T0 + 2 * HOUR)
    assert not whole.layout.shapes and list(whole.data[0].marker.opacity) == [1, 1]


def test_one_expiring_license_gets_days_of_axis_and_every_license_its_label():
    one = pd.DataFrame({"license_id": ["l1"], "customer": ["acme"], "expires_at": [T0], "days_left": [3],
                        "calls_7d": [5]})
    assert axis_span(figures.expiry_timeline(one)) == timedelta(days=6)
    many = pd.DataFrame({"license_id": [f"l{i}" for i in range(40)], "customer": ["acme"] * 40,
                         "expires_at": [T0 + i * HOUR for i in range(40)], "days_left": [3] * 40, "calls_7d": [5] * 40})
    fig = figures.expiry_timeline(many)
    assert list(fig.layout.yaxis.tickvals) == [f"acme · l{i}" for i in range(40)]
    assert fig.layout.height >= 40 * 20  # room for every label


def test_quotas_at_risk_shows_only_those_running_out_or_nearly_full_with_their_projection():
    fig = figures.quota_at_risk(forecast([("a", 50.0, True), ("b", 85.0, False), ("c", 10.0, False)]), now=T0)
    used, projected = fig.data
    assert list(used.y) == ["cust-a · a · export (month)", "cust-b · b · export (month)"]
    assert list(projected.x) == [50.0 + 20 * 50.0 / 10, 85.0 + 20 * 85.0 / 10]  # burn per day over the 20 days left
    assert list(projected.marker.color) == [figures.OUTCOME_COLOURS["deny"]] * 2


def test_customer_figures_keep_the_outcome_colours_and_project_each_quota():
    rows = activity([(T0, "l1", "allow", "VALID", "web", 5, 3, 100), (T0 + HOUR, "l1", "deny", "QUOTA_EXCEEDED", "batch",
                                                                      2, 4, 400)])
    reasons = figures.reasons_by_outcome(rows)
    assert [t.name for t in reasons.data] == list(figures.OUTCOMES)
    assert [t.marker.color for t in reasons.data] == [figures.OUTCOME_COLOURS[o] for o in figures.OUTCOMES]
    assert list(reasons.layout.yaxis.categoryarray) == ["QUOTA_EXCEEDED", "VALID"]  # the commonest on top
    seats = figures.seats_over_time(rows, "hour", now=T0 + 5 * HOUR)
    assert list(seats.data[0].y) == [3, 4] and list(seats.data[1].y) == [10, 10]
    burn = figures.quota_burn(rows, forecast([("l1", 40.0, True)], now=T0 + 2 * HOUR), "hour", now=T0 + 2 * HOUR)
    used, projection = burn.data
    assert list(used.y) == [10.0, 40.0]
    assert list(projection.y) == [40.0, 40.0 + 20 * 40.0 / 10] and projection.line.color == figures.OUTCOME_COLOURS["deny"]
    callers = figures.callers_and_environments(rows)
    assert list(callers.layout.yaxis.categoryarray) == ["batch · prod", "web · prod"]  # bottom up: the busiest on top
