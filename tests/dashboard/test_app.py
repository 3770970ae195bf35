"""The whole app under Streamlit's AppTest, over real Parquet: every page renders, its figures
carry the numbers DuckDB counts straight from the files, and an empty data directory gets an
empty state instead of an error."""
from __future__ import annotations

import base64
import json
import shutil
from importlib.util import find_spec
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from streamlit.testing.v1 import AppTest

from analytics.db import connect
from analytics.registry import run_report
from dashboard.views import DEFAULT_PAGE, PAGES

APP = find_spec("dashboard.app").origin
CHART_TITLES = {
    "overview": ["Decisions over time", "Decision latency"],
    "customers": [],  # until a customer is picked
    "licenses": ["Expiry timeline", "Seat utilisation", "Quotas at risk"],
    "keys": ["Keys by kind", "Zombie keys still presented"],
    "security": ["Unauthorized requests over time", "Top offenders", "Authentication errors"],
    "explorer": [],
}


def open_app(root: Path, monkeypatch, page: str, time_range: str = "30d", **query: str) -> AppTest:
    """The app on ``page`` over ``root`` with ``?range=<time_range>`` (and ``query``) in its URL;
    the 30-day range covers the whole history, so totals do not depend on the second the test runs."""
    monkeypatch.setenv("PORTCULLIS_DATA", str(root))
    at = AppTest.from_file(APP, default_timeout=120)
    for name, value in {"range": time_range, **query}.items():
        at.query_params[name] = value
    at.run()
    if page != DEFAULT_PAGE:  # AppTest runs the default page; the others are reached by their file
        at.switch_page(PAGES[page].path).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def charts(at: AppTest) -> dict[str, dict]:
    figures = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    return {fig["layout"]["title"]["text"]: fig for fig in figures}


def total(values) -> float:
    """Sum a trace's data array: a plain list, or the typed array Plotly encodes numbers as."""
    if isinstance(values, dict):
        values = np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
    return float(np.sum(np.asarray(values, dtype=float)))


def count(root: Path, where: str = "true") -> int:
    """Straight from the Parquet files, not through the views or the reports."""
    files = str(root / "audit" / "date=*" / "hour=*" / "*.parquet")
    return duckdb.sql(f"SELECT count(*) FROM read_parquet('{files}') WHERE {where}").fetchall()[0][0]


@pytest.mark.parametrize("slug", list(PAGES))
def test_every_page_renders_its_charts(history, monkeypatch, slug):
    at = open_app(history, monkeypatch, slug)
    assert [h.value for h in at.header] == [PAGES[slug].title]
    drawn = charts(at)
    assert list(drawn) == CHART_TITLES[slug]
    if slug == "licenses" and not at_risk(history):  # the current quota period may have no records yet
        assert not drawn.pop("Quotas at risk")["data"]
    assert all(fig["data"] for fig in drawn.values()), "a chart fell back to its empty state"


def at_risk(root: Path) -> bool:
    """Whether some quota is at risk in its current period (what "Quotas at risk" draws): the
    history's counters are mostly daily, so just after midnight (UTC) there may be none."""
    forecast = run_report(connect(root), "quota-forecast").to_pylist()
    return any(row["runs_out"] or row["used_pct"] >= 80 for row in forecast)


def test_overview_counts_every_decision_by_outcome(history, monkeypatch):
    at = open_app(history, monkeypatch, "overview")
    decisions = charts(at)["Decisions over time"]["data"]
    assert [trace["name"] for trace in decisions] == ["allow", "alert", "deny"]
    for trace in decisions:
        assert total(trace["y"]) == count(history, f"decision = '{trace['name']}'")
    metrics = {m.label: m for m in at.metric}
    assert metrics["Decisions"].value == f"{count(history):,}"
    assert metrics["Auth failures"].value == f"{count(history, 'http_status = 401'):,}"
    assert [t["name"] for t in charts(at)["Decision latency"]["data"]] == ["p50", "p95", "p99"]


def test_security_counts_every_refused_request(history, monkeypatch):
    drawn = charts(open_app(history, monkeypatch, "security"))
    refused = count(history, "http_status IN (401, 403, 429)")
    assert sum(total(t["x"]) for t in drawn["Top offenders"]["data"]) == refused
    assert sum(total(t["y"]) for t in drawn["Unauthorized requests over time"]["data"]) == refused
    assert total(drawn["Authentication errors"]["data"][0]["y"]) == count(history, "http_status = 401")


def test_explorer_filters_and_pages(history, monkeypatch):
    """Pages are consecutive slices of the matching records, newest first: in order, and neither
    overlapping nor skipping a record, the last one included."""
    at = open_app(history, monkeypatch, "explorer")
    at.selectbox(key="explorer-decision").set_value("deny").run()
    denied = count(history, "decision = 'deny'")
    pages = -(-denied // 50)
    assert at.caption[0].value.startswith(f"{denied:,} matching records") and pages >= 4

    def page(number: int) -> list[str]:
        at.number_input(key="explorer-page").set_value(number).run()
        assert f"page {number} of {pages}" in at.caption[0].value
        shown = at.dataframe[0].value
        assert set(shown["decision"]) == {"deny"}
        return list(shown["decision_id"])

    files = str(history / "audit" / "date=*" / "hour=*" / "*.parquet")
    newest_first = [row[0] for row in duckdb.sql(  # straight from the files, in the explorer's order
        f"SELECT decision_id FROM read_parquet('{files}') WHERE decision = 'deny' ORDER BY ts DESC, decision_id"
    ).fetchall()]
    assert page(1) + page(2) + page(3) == newest_first[:150]
    assert page(pages - 1) + page(pages) == newest_first[(pages - 2) * 50:]


def run_sql(at: AppTest, sql: str) -> AppTest:
    at.text_area(key="explorer-sql-text").set_value(sql)
    return at.button[0].click().run()


def test_sql_box_answers_a_select_and_refuses_the_rest(history, monkeypatch):
    at = open_app(history, monkeypatch, "explorer")
    run_sql(at, "SELECT count(*) AS n FROM audit WHERE decision = 'alert'")
    assert not at.error
    assert at.dataframe[-1].value["n"].tolist() == [count(history, "decision = 'alert'")]
    run_sql(at, "DROP VIEW audit")
    assert "only SELECT" in at.error[0].value
    run_sql(at, "SELECT * FROM read_text('/etc/hostname')")
    assert at.error[0].value.startswith("Query failed") and "disabled" in at.error[0].value
    run_sql(at, "SELECT count(*) AS n FROM audit")  # the views still work after all that
    assert at.dataframe[-1].value["n"].tolist() == [count(history)]


@pytest.mark.parametrize("slug", list(PAGES))
def test_an_empty_data_directory_gets_an_empty_state(empty_data, monkeypatch, slug):
    at = open_app(empty_data, monkeypatch, slug)
    drawn = charts(at)
    assert list(drawn) == CHART_TITLES[slug]
    for fig in drawn.values():
        assert not fig["data"] and fig["layout"]["annotations"][0]["text"].startswith("No ")
    if slug == "overview":
        assert "No audit records" in at.info[0].value
        assert at.success[0].value.startswith("Nothing needs attention")


def test_a_runaway_query_is_stopped(history, monkeypatch):
    at = open_app(history, monkeypatch, "explorer")
    monkeypatch.setenv("PORTCULLIS_DASHBOARD_SQL_TIMEOUT_S", "0.5")
    run_sql(at, "SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b")
    assert at.error[0].value.startswith("Stopped after 0.5 s")
    run_sql(at, "SELECT 42 AS answer")  # and the connection is usable again
    assert at.dataframe[-1].value["answer"].tolist() == [42]


def test_an_unreadable_audit_file_is_left_out_and_named(history, tmp_path, monkeypatch):
    root = tmp_path / "data"
    shutil.copytree(history, root)
    victim = sorted((root / "audit").glob("date=*/hour=*/*.parquet"))[-1]
    lost = pq.read_metadata(victim).num_rows
    victim.write_bytes(b"PAR1 not parquet at all")
    at = open_app(root, monkeypatch, "overview")
    assert "1 unreadable audit file(s) left out" in at.warning[0].value and victim.name in at.warning[0].value
    assert at.metric[0].value == f"{count(history) - lost:,}"


def test_records_written_after_the_dashboard_started_on_an_empty_trail_appear(history, tmp_path, monkeypatch):
    """The connection opened on an empty data directory is renewed once it is EMPTY_TTL_S old;
    a connection that sees files is kept, and still sees the files written after it opened."""
    import streamlit as st

    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setattr("dashboard.data.EMPTY_TTL_S", 0.0)
    at = open_app(root, monkeypatch, "overview")
    assert "No audit records" in at.info[0].value
    shutil.copytree(history, root, dirs_exist_ok=True)
    st.cache_data.clear()  # the queries' own 30 s cache, not the connection, is not what is tested
    at.run()
    assert not at.info and at.metric[0].value == f"{count(history):,}"

    later = sorted((root / "audit").glob("date=*/hour=*/*.parquet"))[-1]
    shutil.copy(later, later.with_name("gw-later-w0-1.parquet"))
    st.cache_data.clear()
    at.run()
    assert at.metric[0].value == f"{count(root):,}" != f"{count(history):,}"


def test_a_live_connection_is_kept_and_a_fixed_one_renewed(history, tmp_path, monkeypatch):
    import streamlit as st

    from dashboard import data

    root = tmp_path / "data"
    shutil.copytree(history, root)
    monkeypatch.setattr(data, "EMPTY_TTL_S", 0.0)
    monkeypatch.setattr(data, "CONNECTION_TTL_S", 0.0)
    live = data._database(str(root))
    assert data._database(str(root)) is live, "a live connection is kept whatever the renewal periods"

    victim = sorted((root / "audit").glob("date=*/hour=*/*.parquet"))[0]
    victim.write_bytes(b"PAR1 not parquet at all")
    st.cache_resource.clear()
    narrowed = data._database(str(root))
    assert data.skipped_files(str(root)) == [str(victim)]
    renewed = data._database(str(root))
    assert renewed is not narrowed, "a connection that left a file out is renewed after CONNECTION_TTL_S"
    monkeypatch.setattr(data, "CONNECTION_TTL_S", 120.0)
    assert data._database(str(root)) is renewed


CUSTOMER_CHARTS = ["Decisions over time", "Decisions by reason", "Seats used", "Quota burn", "Callers and environments"]


def customers_of(root: Path) -> dict[str, list[str]]:
    """Customer -> its license ids, straight from the registry snapshot."""
    rows = pq.read_table(root / "snapshots" / "licenses.parquet", columns=["customer", "license_id"]).to_pylist()
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row["customer"], []).append(row["license_id"])
    return found


def test_customers_page_opens_on_the_customer_its_url_names(history, monkeypatch):
    """?customer= picks the customer; every chart counts that customer's decisions as the files
    hold them, and its licenses are the snapshot's."""
    busiest = duckdb.sql(f"SELECT customer FROM read_parquet('{history}/audit/date=*/hour=*/*.parquet') "
                         "WHERE customer IS NOT NULL GROUP BY ALL ORDER BY count(*) DESC LIMIT 1").fetchall()[0][0]
    at = open_app(history, monkeypatch, "customers", customer=busiest)
    assert at.selectbox(key="customer").value == busiest
    drawn = charts(at)
    assert list(drawn) == CUSTOMER_CHARTS
    mine = f"customer = '{busiest}'"
    for trace in drawn["Decisions over time"]["data"]:
        assert total(trace["y"]) == count(history, f"{mine} AND decision = '{trace['name']}'")
    assert sum(total(t["x"]) for t in drawn["Decisions by reason"]["data"]) == count(history, mine)
    assert sum(total(t["x"]) for t in drawn["Callers and environments"]["data"]) == count(history, mine)
    assert sorted(at.dataframe[0].value["license_id"]) == sorted(customers_of(history)[busiest])


def test_picking_a_customer_puts_it_in_the_url_and_an_unknown_one_is_not_picked(history, monkeypatch):
    at = open_app(history, monkeypatch, "customers", customer="no-such-customer")
    assert at.selectbox(key="customer").value is None and not charts(at)
    assert "Pick a customer" in at.info[0].value
    other = sorted(customers_of(history))[1]
    at.selectbox(key="customer").set_value(other).run()
    assert at.query_params["customer"] == other and at.query_params["range"] == "30d"
    assert list(charts(at)) == CUSTOMER_CHARTS
    assert sorted(at.dataframe[0].value["license_id"]) == sorted(customers_of(history)[other])


def test_the_url_sets_range_and_hosts_and_the_widgets_write_them_back(history, monkeypatch):
    """A link's ?range= and ?host= pick the sidebar's values; a choice in the sidebar goes into the
    URL; a URL changed under a running session (the back button) wins over the widget."""
    at = open_app(history, monkeypatch, "security", time_range="24h", host="gw-stg")
    assert at.selectbox(key="range").value == "Last 24 hours"
    assert at.multiselect(key="hosts").value == ["gw-stg"]
    assert open_app(history, monkeypatch, "security", host="no-such-host").multiselect(key="hosts").value == []
    at.selectbox(key="range").set_value("Last 90 days").run()
    assert at.query_params["range"] == "90d" and at.query_params["host"] == "gw-stg"
    at.query_params["range"] = "7d"  # as the back button would
    at.run()
    assert at.selectbox(key="range").value == "Last 7 days" and at.query_params["range"] == "7d"
    at.query_params.pop("range")  # the sidebar's page links drop the query string: the choice stays
    at.run()
    assert at.selectbox(key="range").value == "Last 7 days" and at.query_params["range"] == "7d"


def test_back_to_the_customers_page_shows_the_customer_again(history, monkeypatch):
    """Streamlit forgets the customer picker's value on another page; the URL the back button
    returns to still names the customer, so it is picked again."""
    customer = sorted(customers_of(history))[2]
    at = open_app(history, monkeypatch, "customers", customer=customer)
    assert at.selectbox(key="customer").value == customer
    at.switch_page(PAGES["security"].path).run()
    at.query_params["customer"] = customer  # back: the customers page's own URL
    at.switch_page(PAGES["customers"].path).run()
    assert at.selectbox(key="customer").value == customer and list(charts(at)) == CUSTOMER_CHARTS


def test_licenses_page_lists_renewals_and_seat_pressure_as_their_reports_do(history, monkeypatch):
    """The two license reports without a chart of their own are tables on the Licenses page (the
    history has licenses to renew within the page's default 90 days, and seat-limited ones)."""
    at = open_app(history, monkeypatch, "licenses")
    headers = [h.value for h in at.subheader]
    assert any(h.startswith("Renew first") for h in headers) and any(h.startswith("Seat pressure") for h in headers)
    con = connect(history)
    for name, params in (("renewals", {"days": 90}), ("seat-pressure", {})):
        expected = run_report(con, name, **params)
        assert expected.num_rows > 0, name
        shown = [df.value for df in at.dataframe if list(df.value.columns) == expected.column_names]
        assert [len(df) for df in shown] == [expected.num_rows], name
        assert list(shown[0]["license_id"]) == expected["license_id"].to_pylist(), name
