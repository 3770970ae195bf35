"""The SQL box's limits, over real DuckDB connections and real threads: a slow query is stopped
after the time limit while the charts' reports answer meanwhile, a memory-hungry one is stopped
instead of eating RAM, and a visitor runs one query at a time."""
from __future__ import annotations

import os
import stat
import tempfile
import threading
import time

import pytest
import streamlit as st

from dashboard import data, sqlbox

SLOW = "SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b"


@pytest.fixture(autouse=True)
def fresh_connections():
    """Connections opened under each test's settings (limits are read when one opens)."""
    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    st.cache_resource.clear()


class Running(threading.Thread):
    """``data.sql`` in a thread of its own, as a visitor's script run; ``outcome`` is its answer
    or the exception it raised."""

    def __init__(self, root, sql, visitor):
        super().__init__(daemon=True)
        self.args_ = (str(root), sql, sqlbox.DEFAULT_LIMIT, visitor)
        self.outcome = None

    def run(self):
        try:
            self.outcome = data.sql(*self.args_)
        except Exception as exc:  # the outcome under test
            self.outcome = exc

    def started_query(self, visitor):
        while visitor not in sqlbox._running:
            assert self.is_alive(), self.outcome
            time.sleep(0.05)
        time.sleep(0.5)  # past opening the connection, into the query


def test_a_slow_query_is_stopped_and_the_charts_answer_meanwhile(history, monkeypatch):
    monkeypatch.setenv("PORTCULLIS_DASHBOARD_SQL_TIMEOUT_S", "20")
    slow = Running(history, SLOW, "analyst")
    slow.start()
    slow.started_query("analyst")
    overview = data.report(str(history), "overview", data.RANGES["Last 30 days"])
    assert slow.is_alive(), "the report waited for the SQL box's query"
    assert overview["decisions"].sum() > 0
    slow.join(120)
    assert isinstance(slow.outcome, sqlbox.StoppedQuery), slow.outcome
    assert str(slow.outcome).startswith("Stopped after 20 s: narrow the query")
    assert data.sql(str(history), "SELECT 42 AS answer", visitor="analyst")[0]["answer"].tolist() == [42]


def test_a_second_query_from_the_same_visitor_is_refused_while_one_runs(history, monkeypatch):
    monkeypatch.setenv("PORTCULLIS_DASHBOARD_SQL_TIMEOUT_S", "20")
    slow = Running(history, SLOW, "analyst")
    slow.start()
    slow.started_query("analyst")
    with pytest.raises(sqlbox.RefusedQuery, match=r"your previous query is still running: .* stopped after 20 s"):
        data.sql(str(history), "SELECT 1", visitor="analyst")
    assert slow.is_alive()
    slow.join(120)
    assert isinstance(slow.outcome, sqlbox.StoppedQuery), slow.outcome
    assert data.sql(str(history), "SELECT 1 AS one", visitor="analyst")[0]["one"].tolist() == [1]


@pytest.mark.parametrize("sql", [
    "SELECT sum(len(l)) FROM (SELECT list(range) AS l FROM range(100000000))",  # held in memory
    "SELECT count(*) FROM (SELECT DISTINCT range::VARCHAR || 'x' FROM range(50000000))",  # spilled
], ids=["memory", "spill"])
def test_a_memory_hungry_query_is_stopped_with_a_message(history, monkeypatch, sql):
    monkeypatch.setenv("PORTCULLIS_DASHBOARD_SQL_MEMORY_MB", "64")
    monkeypatch.setenv("PORTCULLIS_DASHBOARD_SQL_TEMP_MB", "64")
    with pytest.raises(sqlbox.StoppedQuery, match="it needs more than 64 MB of memory and 64 MB of temporary disk"):
        data.sql(str(history), sql, visitor="analyst")
    con = data._database(str(history), sql_box=True).con
    settings = dict(con.sql("SELECT name, value FROM duckdb_settings() WHERE name IN "
                            "('memory_limit', 'max_temp_directory_size', 'temp_directory')").fetchall())
    assert settings["memory_limit"] == settings["max_temp_directory_size"] == "61.0 MiB"  # 64 MB
    temp = settings["temp_directory"]
    assert os.path.commonpath([temp, tempfile.gettempdir()]) == tempfile.gettempdir() and not temp.startswith(os.getcwd())
    assert stat.S_IMODE(os.stat(temp).st_mode) == 0o700
