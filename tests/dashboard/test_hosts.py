"""The dashboard's host filter, under AppTest over a real synthetic history written by three
gateway hosts: no choice counts every host, choosing some counts theirs only."""
from __future__ import annotations

from tests.dashboard.test_app import charts, count, open_app, total


def test_the_host_filter_narrows_every_chart_and_number(history, monkeypatch):
    at = open_app(history, monkeypatch, "overview")
    hosts = at.multiselect(key="hosts")
    assert hosts.options == ["gw-a", "gw-b", "gw-stg"] and hosts.value == []
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Decisions"] == f"{count(history):,}"

    hosts.set_value(["gw-b", "gw-stg"]).run()
    assert not at.exception, [e.value for e in at.exception]
    chosen = "instance IN ('gw-b-w0', 'gw-stg-w0')"
    assert 0 < count(history, chosen) < count(history)
    assert {m.label: m.value for m in at.metric}["Decisions"] == f"{count(history, chosen):,}"
    for trace in charts(at)["Decisions over time"]["data"]:
        assert total(trace["y"]) == count(history, f"{chosen} AND decision = '{trace['name']}'")

    security = open_app(history, monkeypatch, "security")
    security.multiselect(key="hosts").set_value(["gw-b", "gw-stg"]).run()
    refused = count(history, f"{chosen} AND http_status IN (401, 403, 429)")
    assert sum(total(t["x"]) for t in charts(security)["Top offenders"]["data"]) == refused
