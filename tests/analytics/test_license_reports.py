"""The license reports that answer questions (quota-forecast, seat-pressure, key-anomalies,
renewals) over planted Parquet read by real DuckDB: each finds exactly the planted case and none
of its controls, and gives the same answers from the raw trail, from the license rollups, and in
the stock DuckDB CLI."""
from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from analytics import rollups
from analytics.db import connect, query
from analytics.registry import REPORTS, run_report
from gateway.snapshot import write_callers_snapshot, write_licenses_snapshot

from .conftest import DAY, HOUR, LICENSES, NOW, license_row, licensed, planted_records, write_audit
from .test_stock_cli import stock_cli

FAR = NOW + 400 * DAY
LIC = {
    # quota-forecast: a monthly quota burning to exhaustion on day 20 of June's 30, a slow one, a
    # daily one used the same each day
    "burn": license_row("lic_burn", expires_at=FAR),
    "slow": license_row("lic_slow", expires_at=FAR),
    "daily": license_row("lic_daily", expires_at=FAR),
    # seat-pressure: a seat-limited license with more users each week, one with the same users
    "growing": license_row("lic_growing", expires_at=FAR, tier="free"),
    "flat": license_row("lic_flat", expires_at=FAR, tier="free"),
    # key-anomalies: a key suddenly used from a new network at 10x its volume; a steady key; a
    # new license with no usual yet; a key moving within its IPv6 /64
    "leaked": license_row("lic_leaked", expires_at=FAR),
    "steady": license_row("lic_steady", expires_at=FAR),
    "fresh": license_row("lic_fresh", expires_at=FAR, created_at=NOW - 2 * DAY),
    "v6": license_row("lic_v6", expires_at=FAR),
    # renewals: a busy and an idle license expiring soon; a busy one expiring later; a revoked one
    "busy": license_row("lic_busy", expires_at=NOW + 10 * DAY),
    "idle": license_row("lic_idle", expires_at=NOW + 12 * DAY),
    "busy_later": license_row("lic_busy_later", expires_at=NOW + 200 * DAY),
    "revoked": license_row("lic_revoked_soon", expires_at=NOW + 5 * DAY, status="revoked"),
}
JUNE = datetime(2026, 6, 1, tzinfo=NOW.tzinfo)
LEAK_NETWORK = "198.51.100.0/24"


def metered(ts: datetime, lic: dict, feature: str, used: int, limit: int) -> dict:
    return licensed(ts, lic, feature=feature, quantity=1, quota_used=used, quota_limit=limit)


def quota_records() -> list[dict]:
    rows = []
    for day in range(-10, 15):  # from May 22 to June 15, two calls a day
        start = JUNE + day * DAY
        month_days = day if day >= 0 else day + 31  # the counter restarts on the 1st
        for half, hour in enumerate((6, 18)):
            rows.append(metered(start + hour * HOUR, LIC["burn"], "export", 50 * month_days + 25 * (half + 1), 1000))
            rows.append(metered(start + hour * HOUR, LIC["slow"], "export", 10 * month_days + 5 * (half + 1), 1000))
        for quarter, hour in enumerate((3, 9, 15, 21)):
            rows.append(metered(start + hour * HOUR, LIC["daily"], "api.calls", 75 * (quarter + 1), 1000))
    return [r for r in rows if r["ts"] < NOW + DAY]  # some after NOW, which no report may count


def seat_records() -> list[dict]:
    rows = []
    for back in range(31):
        day = NOW - back * DAY
        growing = 2 + (30 - back) // 5  # 2 users a month ago, 7 yesterday
        for user in range(growing):
            rows.append(licensed(day - HOUR, LIC["growing"], user_id=f"g{user}", seats_used=min(10, growing + 1),
                                 seats_limit=10))
        for user in range(5):
            rows.append(licensed(day - HOUR, LIC["flat"], user_id=f"f{user}", seats_used=6, seats_limit=10))
    return rows


def key_records() -> list[dict]:
    rows = []
    for back in range(2, 31):  # the look-back: 20 calls a day from inside 10.0.0.0/24 (and one /64)
        for i in range(20):
            ts = NOW - back * DAY + i * HOUR
            rows.append(licensed(ts, LIC["leaked"], remote_addr=f"10.0.0.{i % 9 + 1}"))
            rows.append(licensed(ts, LIC["steady"], remote_addr=f"10.0.0.{i % 9 + 1}"))
            rows.append(licensed(ts, LIC["v6"], remote_addr="2001:db8:1:2::10"))
    for i in range(200):  # the last 24 hours
        ts = NOW - DAY + i * timedelta(minutes=7)
        rows.append(licensed(ts, LIC["leaked"], remote_addr="198.51.100.7" if i % 2 else "10.0.0.3"))
        rows.append(licensed(ts, LIC["fresh"], remote_addr="203.0.113.9"))
        if i % 10 == 0:
            rows.append(licensed(ts, LIC["steady"], remote_addr="10.0.0.200"))
            rows.append(licensed(ts, LIC["v6"], remote_addr="2001:db8:1:2:abcd::99"))
    return rows


def renewal_records() -> list[dict]:
    rows = []
    for back in range(20):
        for user, feature in enumerate(("export", "reports.basic", "dashboard.view")):
            for lic in (LIC["busy"], LIC["busy_later"], LIC["revoked"]):
                rows.append(licensed(NOW - back * DAY - HOUR, lic, user_id=f"b{user}", feature=feature))
    rows.append(licensed(NOW - 60 * DAY, LIC["idle"], user_id="i0"))  # used, but not lately
    return rows


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("license-reports") / "data"
    write_audit(data, quota_records() + seat_records() + key_records() + renewal_records())
    write_licenses_snapshot(data, LIC.values())
    write_callers_snapshot(data, [{"caller_id": "web", "key_ids": ["pk_web"], "admin": False}])
    return data


@pytest.fixture(scope="module")
def summarised(planted: Path, tmp_path_factory) -> Path:
    """The same trail with its rollups built as of NOW: every whole day from the license rollups."""
    data = Path(shutil.copytree(planted, tmp_path_factory.mktemp("summarised") / "data"))
    rollups.build(data, now=NOW, grace=timedelta(0))
    return data


def rows(data: Path, name: str, **params) -> list[dict]:
    return run_report(connect(data), name, now=NOW, **params).to_pylist()


def test_quota_forecast_finds_the_quota_running_out_before_its_period_ends(planted: Path) -> None:
    found = rows(planted, "quota-forecast")
    by_license = {r["license_id"]: r for r in found}
    assert set(by_license) == {"lic_burn", "lic_slow", "lic_daily"}
    assert [r["license_id"] for r in found if r["runs_out"]] == ["lic_burn"]
    burn = by_license["lic_burn"]
    assert (burn["period"], burn["quota_used"], burn["quota_limit"], burn["burn_per_day"]) == ("month", 725, 1000, 50.0)
    assert burn["exhausts_at"] == JUNE + 20 * DAY and burn["period_end"] == datetime(2026, 7, 1, tzinfo=NOW.tzinfo)
    assert by_license["lic_slow"]["exhausts_at"] > by_license["lic_slow"]["period_end"]
    daily = by_license["lic_daily"]  # 150 of 1,000 by noon: 300 a day, not enough to run out today
    assert (daily["period"], daily["quota_used"], daily["period_end"]) == ("day", 150, NOW.replace(hour=0) + DAY)


def test_seat_pressure_projects_the_growing_license_to_its_limit(planted: Path) -> None:
    found = {r["license_id"]: r for r in rows(planted, "seat-pressure")}
    assert set(found) == {"lic_growing", "lic_flat"}
    growing, flat = found["lic_growing"], found["lic_flat"]
    assert growing["at_risk"] and not flat["at_risk"]
    assert len(growing["daily_active_users"]) == 30  # the whole days before NOW's
    assert growing["daily_active_users"][0] == 2 and growing["daily_active_users"][-1] == 7
    assert NOW.date() + timedelta(days=5) <= growing["reaches_limit_on"] <= NOW.date() + timedelta(days=20)
    assert flat["reaches_limit_on"] is None and flat["users_per_day"] == 0
    assert not [r for r in rows(planted, "seat-pressure", horizon=5) if r["at_risk"]]


def test_key_anomalies_flag_the_leaked_key_only(planted: Path) -> None:
    found = rows(planted, "key-anomalies")
    assert {(r["kind"], r["license_id"], r["network"]) for r in found} == {
        ("new_network", "lic_leaked", LEAK_NETWORK), ("volume", "lic_leaked", None)}
    volume = next(r for r in found if r["kind"] == "volume")
    assert volume["calls"] == 200 and volume["usual_daily"] < 20
    assert {r["calls"] for r in found if r["kind"] == "new_network"} == {100}
    assert {(r["kind"], r["license_id"]) for r in rows(planted, "key-anomalies", factor=20)} == {
        ("new_network", "lic_leaked")}


def test_key_anomalies_flag_a_new_caller(planted: Path, tmp_path: Path) -> None:
    data = Path(shutil.copytree(planted, tmp_path / "data"))
    write_audit(data, [licensed(NOW - HOUR, LIC["steady"], caller_id="stranger")], name="extra")
    assert [(r["kind"], r["license_id"], r["caller_id"]) for r in rows(data, "key-anomalies")
            if r["license_id"] != "lic_leaked"] == [("new_caller", "lic_steady", "stranger")]


def test_renewals_rank_the_busy_license_before_the_idle_one(planted: Path) -> None:
    found = rows(planted, "renewals")
    assert [(r["rank"], r["license_id"]) for r in found] == [(1, "lic_busy"), (2, "lic_idle")]
    busy, idle = found
    assert (busy["calls"], busy["active_users"], busy["features"]) == (60, 3, 3)
    assert (idle["calls"], idle["active_users"], idle["features"], idle["last_seen"]) == (0, 0, 0, None)
    assert [r["license_id"] for r in rows(planted, "renewals", usage_days=90)][1] == "lic_idle"


LICENSE_REPORTS = ("quota-forecast", "seat-pressure", "key-anomalies", "renewals", "expiring", "seats", "quota", "features", "stale-keys")


@pytest.mark.parametrize("name", LICENSE_REPORTS)
def test_the_same_answers_from_the_license_rollups(planted: Path, summarised: Path, name: str) -> None:
    covered = query(connect(summarised), "SELECT getvariable('license_days_covered') AS days").to_pylist()[0]["days"]
    assert len(covered) >= 40  # May 4 .. June 14: every whole day; NOW's own day is read raw
    expected = run_report(connect(planted), name, now=NOW)
    assert expected.num_rows
    assert run_report(connect(summarised), name, now=NOW).equals(expected)


def test_whole_days_are_read_from_the_license_rollups(summarised: Path, tmp_path: Path) -> None:
    """Once summarised, a whole day's audit files are not read: the answer stays without them."""
    data = Path(shutil.copytree(summarised, tmp_path / "data"))
    before = rows(data, "renewals")
    shutil.rmtree(data / "audit" / f"date={(NOW - 3 * DAY).date().isoformat()}")
    assert rows(data, "renewals") == before
    assert run_report(connect(data, rollups=False), "renewals", now=NOW).to_pylist() != before  # read raw: fewer


def _cli_rows(data: Path, name: str) -> list[tuple]:
    report = REPORTS[name]
    args = ", ".join(f"{key} := " + (f"TIMESTAMPTZ '{NOW.isoformat()}'" if key == "now" else repr(value))
                     for key, value in report.bind(now=NOW).items())
    found = stock_cli(data, f"PREPARE q AS {report.sql};\nEXECUTE q({args});")
    return [(r.get("license_id"), r.get("kind"), r.get("runs_out"), r.get("at_risk"), r.get("rank")) for r in found]


@pytest.mark.parametrize("name", LICENSE_REPORTS)
def test_the_stock_cli_gives_the_same_answers(planted: Path, summarised: Path, name: str) -> None:
    expected = [(r.get("license_id"), r.get("kind"), r.get("runs_out"), r.get("at_risk"), r.get("rank"))
                for r in rows(planted, name)]
    assert expected and _cli_rows(planted, name) == expected and _cli_rows(summarised, name) == expected


def test_network_of_cuts_addresses_to_their_network(planted: Path) -> None:
    addresses = pa.table({"addr": ["10.1.2.3", "::ffff:10.1.2.3", "2001:db8::1", "2001:DB8:1:2:3:4:5:6", "::1",
                                   "fe80::1%eth0", "2001:db8:1:2::"]})
    con = connect(planted)
    con.register("addresses", addresses)
    assert [r[0] for r in con.execute("SELECT network_of(addr) FROM addresses").fetchall()] == [
        "10.1.2.0/24", "10.1.2.0/24", "2001:db8:0:0::/64", "2001:db8:1:2::/64", "0:0:0:0::/64", "fe80:0:0:0::/64",
        "2001:db8:1:2::/64"]


@pytest.mark.parametrize("name", ("renewals", "key-anomalies"))
def test_an_unreadable_file_left_out_is_left_out_of_the_license_reports(planted: Path, tmp_path: Path,
                                                                          name: str) -> None:
    damaged = Path(shutil.copytree(planted, tmp_path / "damaged"))
    without = Path(shutil.copytree(planted, tmp_path / "without"))
    victim = next((damaged / "audit" / f"date={(NOW - DAY).date()}" / "hour=20").glob("*.parquet"))  # in the windows
    victim.write_bytes(victim.read_bytes()[:100])
    (without / victim.relative_to(damaged)).unlink()
    con = connect(damaged, skip_corrupt=True)
    assert run_report(con, name, now=NOW).equals(run_report(connect(without), name, now=NOW))


@pytest.mark.parametrize("name", ("stale-keys", "expiring", "seats", "features", "renewals"))
def test_the_shared_planted_cases_read_the_same_from_the_license_rollups(tmp_path: Path, name: str) -> None:
    """The other reports' planted cases (stale, never used, revoked, expired and unknown keys, a
    key prober; seats, features) through the license rollups as through the records."""
    data = tmp_path / "data"
    write_audit(data, planted_records())
    write_licenses_snapshot(data, LICENSES.values())
    expected = run_report(connect(data), name, now=NOW)
    rollups.build(data, now=NOW, grace=timedelta(0))
    assert query(connect(data), "SELECT len(getvariable('license_days_covered')) AS n").to_pylist()[0]["n"] > 50
    assert expected.num_rows and run_report(connect(data), name, now=NOW).equals(expected)
