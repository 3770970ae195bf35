"""Rollups: the reports that read summary() give what the raw records give, with rollups built,
stale, partly built or absent; builds follow every change of the trail's files."""
from __future__ import annotations

import fcntl
import json
import random
import shutil
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from analytics import rollups
from analytics.db import VIEWS_SQL, CorruptFileError, connect, drop_rollups, query, skipped_files
from analytics.registry import run_report
from analytics.synth.history import generate
from gateway.cli import main as cli
from tests.conftest import portcullis

from .conftest import NOW, record, write_audit

END = datetime(2026, 3, 1, tzinfo=timezone.utc)
DAYS, ROWS = 3, 30_000
HOUR = timedelta(hours=1)
NO_GRACE = timedelta(0)
# "now" 17 minutes past an hour, so that every window starts and splits inside an hour.
AT = END - timedelta(minutes=43)
SUMMARY_REPORTS = [("overview", {"hours": 24}), ("overview", {"hours": 30}), ("trends", {"days": 2}),
                   ("trends", {"days": 3, "bucket": "day"}), ("latency", {"days": 2}),
                   ("latency", {"days": 3, "bucket": "day"})]


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("history")
    generate(data, days=DAYS, rows=ROWS, end=END, licenses=50)
    return data


@pytest.fixture
def data(history: Path, tmp_path: Path) -> Path:
    """A copy of the history of this test's own, to change."""
    return Path(shutil.copytree(history, tmp_path / "data"))


def build(root: Path, now: datetime = END) -> rollups.Build:
    return rollups.build(root, now=now, grace=NO_GRACE)


def report(root: Path, name: str, **params):
    con = connect(root)
    try:
        return run_report(con, name, now=AT, **params)
    finally:
        con.close()


def report_without_rollups(root: Path, name: str, **params):
    con = connect(root)
    drop_rollups(con)
    try:
        return run_report(con, name, now=AT, **params)
    finally:
        con.close()


def raw(root: Path, sql: str, **params):
    """An answer straight from the (readable) audit records, not through summary()."""
    con = connect(root, skip_corrupt=True)
    try:
        return query(con, sql, params).to_pylist()
    finally:
        con.close()


def overview_from_records(root: Path, hours: int) -> list[dict]:
    return raw(root, """
        SELECT CASE WHEN ts >= $at - to_hours($hours) THEN 'current' ELSE 'previous' END AS period,
               count(*) AS decisions, count(*) FILTER (WHERE decision = 'deny') AS denied,
               round(100.0 * count(*) FILTER (WHERE decision = 'deny') / count(*), 2) AS deny_pct,
               count(*) FILTER (WHERE decision = 'alert') AS alerts,
               quantile_cont(latency_bucket(latency_us), 0.99) AS p99_us,
               count(*) FILTER (WHERE http_status = 401) AS auth_failures
        FROM audit WHERE ts >= $at - to_hours(2 * $hours) AND ts < $at
        GROUP BY period ORDER BY period""", at=AT, hours=hours)


def assert_overview(found: list[dict], expected: list[dict]) -> None:
    """Equal, the p99 up to floating-point rounding (summed in another order)."""
    assert [{**r, "p99_us": None} for r in found] == [{**r, "p99_us": None} for r in expected]
    assert [r["p99_us"] for r in found] == pytest.approx([r["p99_us"] for r in expected], rel=1e-12)


def test_reports_read_the_same_with_rollups_as_without(data: Path):
    before = {(name, json.dumps(params)): report(data, name, **params) for name, params in SUMMARY_REPORTS}
    built = build(data)
    assert built.hours_built == DAYS * 24 and len(built.days_written) == DAYS
    for (name, params), table in before.items():
        assert report(data, name, **json.loads(params)).equals(table), (name, params)


@pytest.mark.parametrize("hours", [24, 30])
def test_overview_matches_the_records(data: Path, hours: int):
    build(data)
    assert_overview(report(data, "overview", hours=hours).to_pylist(), overview_from_records(data, hours))


def test_latency_quantiles_match_the_records_within_half_a_percent(data: Path):
    build(data)
    found = report(data, "latency", days=2).to_pylist()
    expected = raw(data, """
        SELECT date_trunc('hour', ts) AS bucket, count(*) AS calls,
               quantile_cont(latency_bucket(latency_us), [0.5, 0.95, 0.99]) AS bucketed,
               quantile_cont(latency_us, [0.5, 0.95, 0.99]) AS exact, max(latency_us) AS max_us
        FROM audit WHERE ts >= $at - INTERVAL 2 DAY AND ts < $at GROUP BY bucket ORDER BY bucket""", at=AT)
    assert [r["bucket"] for r in found] == [r["bucket"] for r in expected]
    assert max(r["max_us"] for r in expected) > 1000  # the rounding is exercised
    for got, want in zip(found, expected):
        assert got["calls"] == want["calls"]
        assert [got["p50_us"], got["p95_us"], got["p99_us"]] == pytest.approx(want["bucketed"], rel=1e-12)
        assert [got["p50_us"], got["p95_us"], got["p99_us"]] == pytest.approx(want["exact"], rel=0.005)
        assert got["max_us"] == pytest.approx(want["max_us"], rel=0.005)


def test_trends_match_the_records(data: Path):
    build(data)
    found = {(r["bucket"], r["decision"], r["reason"]): r["calls"] for r in report(data, "trends", days=2).to_pylist()}
    expected = raw(data, """
        SELECT date_trunc('hour', ts) AS bucket, decision, reason, count(*) AS calls
        FROM audit WHERE ts >= $at - INTERVAL 2 DAY AND ts < $at GROUP BY ALL""", at=AT)
    assert found == {(r["bucket"], r["decision"], r["reason"]): r["calls"] for r in expected}


def test_an_earlier_build_covers_its_hours_only(data: Path):
    """A build cut short after its first day: the rollups cover that day, the rest is read raw."""
    expected = report(data, "overview", hours=30)
    shutil.rmtree(data / "rollups", ignore_errors=True)
    build(data, now=END - 2 * timedelta(days=1))  # only the first day is closed then
    con = connect(data)
    assert con.execute("SELECT getvariable('rollups_until')").fetchall()[0][0] == END - 2 * timedelta(days=1)
    con.close()
    assert report(data, "overview", hours=30).equals(expected)


def test_only_closed_hours_are_summarised(data: Path):
    built = rollups.build(data, now=END + timedelta(minutes=30), grace=timedelta(hours=2))
    assert built.hours_built == DAYS * 24 - 2
    assert rollups.build(data, now=END + timedelta(hours=2), grace=timedelta(hours=2)).hours_built == 2


def test_a_second_build_changes_nothing(data: Path):
    build(data)
    again = build(data)
    assert (again.hours_built, again.hours_dropped, again.days_written) == (0, 0, [])


def test_a_late_file_is_summarised_again_with_its_hour(data: Path):
    build(data)
    late = END - 30 * HOUR + timedelta(minutes=5)
    write_audit(data, [record(late, decision="deny", reason="LICENSE_REVOKED", latency_us=12_345)
                       for _ in range(7)], name="late-replay")
    rebuilt = build(data)
    assert (rebuilt.hours_built, rebuilt.days_written) == (1, [late.date().isoformat()])
    revoked = [r for r in report(data, "trends", days=2).to_pylist() if r["reason"] == "LICENSE_REVOKED"
               and r["bucket"] == late.replace(minute=0)]
    assert revoked[0]["calls"] >= 7
    assert_overview(report(data, "overview", hours=30).to_pylist(), overview_from_records(data, 30))


def test_a_compacted_hour_is_summarised_again_and_reads_the_same(data: Path):
    build(data)
    before = report(data, "overview", hours=30)
    hour_dir = next((data / "audit").glob("date=*/hour=10"))
    files = sorted(hour_dir.glob("*.parquet"))
    table = pa.concat_tables(pq.read_table(f) for f in files)
    for f in files:
        f.unlink()
    pq.write_table(table, hour_dir / "compact-abc.parquet")
    assert build(data).hours_built == 1
    assert report(data, "overview", hours=30).equals(before)


def test_hours_whose_files_are_gone_are_dropped(data: Path):
    build(data)
    first_day = sorted((data / "audit").glob("date=*"))[0]
    shutil.rmtree(first_day)
    rebuilt = build(data)
    assert rebuilt.hours_dropped == 24 and rebuilt.hours_built == 0
    assert not (data / "rollups" / first_day.name).exists()
    assert_overview(report(data, "overview", hours=30).to_pylist(), overview_from_records(data, 30))


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[:100])
    else:  # the pages: the footer still reads, the data does not
        path.write_bytes(data[:4] + bytes(255 - b for b in data[4:len(data) // 2]) + data[len(data) // 2:])


@pytest.mark.parametrize("how", ["truncated", "pages"])
@pytest.mark.parametrize("which", [0, 1])
def test_a_damaged_day_file_reads_raw_and_is_written_again(data: Path, which: int, how: str):
    build(data)
    day_file = sorted((data / "rollups").glob("date=*/hours.parquet"))[which]
    damage(day_file, how)
    # Meanwhile the reports read the raw trail, never an error: rollups are only derived data.
    assert_overview(report(data, "overview", hours=30).to_pylist(), overview_from_records(data, 30))
    rebuilt = build(data)
    assert rebuilt.hours_built == 24 and rebuilt.days_written == [day_file.parent.name.removeprefix("date=")]
    assert_overview(report(data, "overview", hours=30).to_pylist(), overview_from_records(data, 30))


def test_a_missing_day_file_ends_what_readers_trust(data: Path):
    build(data)
    middle = sorted((data / "rollups").glob("date=*/hours.parquet"))[1]
    shutil.rmtree(middle.parent)
    con = connect(data)
    assert con.execute("SELECT getvariable('rollups_until')").fetchall()[0][0] == END - 2 * timedelta(days=1)
    con.close()
    assert_overview(report(data, "overview", hours=30).to_pylist(), overview_from_records(data, 30))
    assert build(data).days_written == [middle.parent.name.removeprefix("date=")]


def test_a_missing_first_day_file_is_read_raw(data: Path):
    build(data)
    first = sorted((data / "rollups").glob("date=*/hours.parquet"))[0]
    shutil.rmtree(first.parent)
    assert report(data, "trends", days=3, bucket="day").equals(report_without_rollups(data, "trends", days=3, bucket="day"))


def test_a_day_without_records_keeps_the_chain(data: Path):
    shutil.rmtree(sorted((data / "audit").glob("date=*"))[1])  # the gateway was down all day
    build(data)
    con = connect(data)
    assert con.execute("SELECT getvariable('rollups_until')").fetchall()[0][0] == END
    con.close()
    assert_overview(report(data, "overview", hours=30).to_pylist(), overview_from_records(data, 30))


def test_the_reports_read_the_rollups(data: Path):
    """Proof that the summaries are what is read: after the build, a file of a summarised hour
    goes away, and until the next build the reports still count its records."""
    build(data)
    before = report(data, "overview", hours=30).to_pylist()
    victim = sorted((data / "audit").glob("date=*/hour=15/*.parquet"))[-1]
    rows = pq.read_metadata(victim).num_rows
    victim.unlink()
    assert report(data, "overview", hours=30).to_pylist() == before
    assert sum(r["decisions"] for r in report_without_rollups(data, "overview", hours=30).to_pylist()) == \
        sum(r["decisions"] for r in before) - rows
    build(data)
    assert_overview(report(data, "overview", hours=30).to_pylist(), overview_from_records(data, 30))


def test_a_build_cut_short_leaves_no_gap(data: Path, monkeypatch):
    written = []
    real = rollups._write_day

    def crash_after_the_first_day(*args, **kwargs):
        if written:
            raise KeyboardInterrupt
        written.append(real(*args, **kwargs))

    monkeypatch.setattr(rollups, "_write_day", crash_after_the_first_day)
    with pytest.raises(KeyboardInterrupt):
        build(data)
    con = connect(data)
    assert con.execute("SELECT getvariable('rollups_until')").fetchall()[0][0] == END - 2 * timedelta(days=1)
    con.close()
    assert_overview(report(data, "overview", hours=30).to_pylist(), overview_from_records(data, 30))


def test_a_day_file_of_another_version_is_written_again(data: Path, monkeypatch):
    build(data)
    monkeypatch.setattr(rollups, "VERSION", rollups.VERSION + 1)
    assert build(data).hours_built == DAYS * 24


def test_an_hour_with_an_unreadable_audit_file_is_left_to_the_raw_trail(data: Path):
    victim = sorted((data / "audit").glob("date=*/hour=05/*.parquet"))[1]
    victim.write_bytes(b"PAR1 not really")
    built = build(data)
    assert built.skipped_files == [str(victim)]
    assert build(data).hours_built == 0, "summarised as it is, not again and again"
    hour = datetime.strptime(f"{victim.parent.parent.name}/{victim.parent.name}", "date=%Y-%m-%d/hour=%H").replace(
        tzinfo=timezone.utc)
    con = connect(data, skip_corrupt=True)
    assert con.execute("SELECT getvariable('rollups_unsummarised')").fetchall()[0][0] == [hour]
    # read raw, the reader's own policy applies: left out and named with skip_corrupt...
    assert_overview(run_report(con, "overview", now=AT, hours=30).to_pylist(), overview_from_records(data, 30))
    assert skipped_files(con) == [str(victim)]
    con.close()
    # ...and an error naming the file without it, as before there were rollups
    with pytest.raises(CorruptFileError, match=victim.name):
        report(data, "overview", hours=30)


def test_the_longest_latency_the_gateway_records_is_summarised(data: Path):
    write_audit(data, [record(END - 20 * HOUR, latency_us=2**31 - 1)], name="stuck")
    built = build(data)
    assert built.hours_built == DAYS * 24
    top = max(r["max_us"] for r in report(data, "latency", days=2).to_pylist())
    assert top == pytest.approx(2**31 - 1, rel=0.005)


def test_no_denies_is_a_deny_rate_of_zero(planted: Path):
    quiet = NOW + timedelta(days=30)
    write_audit(planted, [record(quiet - timedelta(minutes=m)) for m in range(1, 5)], name="quiet")
    rollups.build(planted, now=quiet, grace=NO_GRACE)
    rows = run_report(connect(planted), "overview", now=quiet, hours=1).to_pylist()
    assert [(r["period"], r["decisions"], r["denied"], r["deny_pct"]) for r in rows] == [
        ("current", 4, 0, 0.0), ("previous", 0, 0, None)]


def test_one_build_at_a_time(data: Path):
    (data / "rollups").mkdir()
    with open(data / "rollups" / "_build.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert rollups.build(data, now=END, grace=NO_GRACE, wait=False) is None
    assert rollups.build(data, now=END, grace=NO_GRACE, wait=False).hours_built == DAYS * 24


def test_views_sql_verbatim_reads_the_rollups(data: Path, monkeypatch):
    build(data)
    sorted((data / "audit").glob("date=*/hour=12/*.parquet"))[0].unlink()  # summarised: still counted
    monkeypatch.chdir(data)  # what `cd data && duckdb -init ../analytics/views.sql` does
    con = duckdb.connect()
    con.execute(VIEWS_SQL.read_text())
    assert con.execute("SELECT getvariable('rollups_until')").fetchall()[0][0] == END
    total = con.execute("SELECT sum(calls) FROM summary($s, $u, $s) WHERE latency_us IS NULL",
                        {"s": END - 3 * timedelta(days=1), "u": END}).fetchall()[0][0]
    assert total == ROWS


def test_histogram_quantile_is_quantile_cont():
    con = connect(Path("/nonexistent-data-dir"))
    rng = random.Random(7)
    for values in ([5], [3, 3, 3], [1, 2], [rng.randint(1, 50) for _ in range(997)]):
        con.execute("CREATE OR REPLACE TABLE v AS SELECT unnest($values) AS x", {"values": values})
        for q in (0.0, 0.25, 0.5, 0.95, 0.99, 1.0):
            want = con.execute("SELECT quantile_cont(x, $q) FROM v", {"q": q}).fetchall()[0][0]
            got = con.execute("""
                WITH h AS (SELECT x, count(*) AS n FROM v GROUP BY x),
                     r AS (SELECT x, sum(n) OVER (ORDER BY x) AS upto, sum(n) OVER () AS total FROM h)
                SELECT histogram_quantile(x, upto, total, $q) FROM r""", {"q": q}).fetchall()[0][0]
            assert got == pytest.approx(want, rel=1e-12), (values[:5], q)


def test_planted_reports_are_unchanged_by_rollups(planted: Path):
    """The planted cases (exact latencies 1..100 µs) read the same once summarised."""
    before = {name: run_report(connect(planted), name, now=NOW) for name in ("overview", "trends", "latency")}
    rollups.build(planted, now=NOW, grace=NO_GRACE)
    for name, table in before.items():
        assert run_report(connect(planted), name, now=NOW).equals(table), name


def test_rollup_command(data: Path):
    runner = CliRunner()
    result = runner.invoke(cli, ["rollup", "--data", str(data), "--json", "--grace-s", "0"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["hours_built"] == DAYS * 24 and len(out["days_written"]) == DAYS
    assert "summarising" in result.stderr
    again = runner.invoke(cli, ["rollup", "--data", str(data), "--grace-s", "0"])
    assert again.exit_code == 0 and again.stdout.startswith("summarised 0 hour(s)")
    assert runner.invoke(cli, ["rollup", "--help"]).exit_code == 0
    missing = runner.invoke(cli, ["rollup", "--data", str(data / "nope")])
    assert missing.exit_code == 1 and "no audit trail" in missing.output


def test_rollup_command_by_default_leaves_an_hour_closed_less_than_hour_closed_after_ago(tmp_path: Path):
    """Without --grace-s an hour counts as closed ``Settings.hour_closed_after`` after its end:
    with a rotation of 5,400 s that is 3 h 5 min, so the hour before last (ended 1 to 2 hours
    ago, whatever the minute now) is not summarised yet, and the one five hours back is."""
    data = tmp_path / "data"
    this_hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    open_, closed = this_hour - 2 * HOUR, this_hour - 5 * HOUR
    write_audit(data, [record(open_ + timedelta(minutes=10)), record(closed + timedelta(minutes=10))])

    def summarised() -> set[datetime]:
        return {hour for (hour,) in duckdb.sql(
            f"SELECT DISTINCT hour FROM read_parquet('{data}/rollups/date=*/hours.parquet') WHERE calls > 0"
        ).fetchall()}
    runner = CliRunner(env={"PORTCULLIS_AUDIT_ROTATE_S": "5400"})
    result = runner.invoke(cli, ["rollup", "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["hours_built"] == 1 and summarised() == {closed}
    result = runner.invoke(cli, ["rollup", "--data", str(data), "--json", "--grace-s", "0"])
    assert json.loads(result.stdout)["hours_built"] == 1 and summarised() == {closed, open_}


def test_the_reports_that_read_rollups_bring_them_up_to_date_first(data: Path):
    runner = CliRunner()
    quick = runner.invoke(cli, ["report", "unauthorized", "--data", str(data), "--now", AT.isoformat()])
    assert quick.exit_code == 0 and not (data / "rollups").exists(), "reports without rollups build nothing"
    result = runner.invoke(cli, ["report", "overview", "--data", str(data), "--hours", "30", "--now", AT.isoformat(),
                                 "--format", "json"])
    assert result.exit_code == 0, result.output
    assert "summarising" in result.stderr
    assert len(list((data / "rollups").glob("date=*/hours.parquet"))) == DAYS
    rows = json.loads(result.stdout)["rows"]
    assert [r["decisions"] for r in rows] == [r["decisions"] for r in overview_from_records(data, 30)]


def test_a_report_reads_the_raw_trail_while_another_build_runs(data: Path):
    (data / "rollups").mkdir()
    with open(data / "rollups" / "_build.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = CliRunner().invoke(cli, ["report", "trends", "--data", str(data), "--now", AT.isoformat()])
    assert result.exit_code == 0 and result.stderr == ""
    assert not list((data / "rollups").glob("date=*/hours.parquet"))


def test_rollup_command_errors_are_one_line(data: Path):
    (data / "rollups").write_text("a file where the directory goes")
    result = portcullis("rollup", "--data", str(data))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1  # no traceback


def finishes(work, timeout: float = 120.0):
    """``work()``'s result, failing (instead of hanging the suite) if it does not end."""
    outcome = {}

    def run():
        try:
            outcome["value"] = work()
        except Exception as exc:  # handed to the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "did not finish"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def test_a_file_replaced_during_a_build_leaves_its_hour_to_the_next(data: Path, monkeypatch):
    """Compaction renames an hour's files while a build reads them: that hour is read raw, and
    summarised by the next build; the other hours are not touched."""
    victim = sorted((data / "audit").glob("date=*/hour=10/*.parquet"))[1]
    hour = datetime.strptime(f"{victim.parent.parent.name}/{victim.parent.name}", "date=%Y-%m-%d/hour=%H").replace(
        tzinfo=timezone.utc)
    listing = rollups._closed_hours

    def compacted_right_after_listing(*args):
        found = listing(*args)
        victim.rename(victim.with_name("compact-merged.parquet"))
        monkeypatch.setattr(rollups, "_closed_hours", listing)
        return found

    monkeypatch.setattr(rollups, "_closed_hours", compacted_right_after_listing)
    build(data)
    con = connect(data)
    assert con.execute("SELECT getvariable('rollups_unsummarised')").fetchall()[0][0] == [hour]
    con.close()
    assert_overview(report(data, "overview", hours=30).to_pylist(), overview_from_records(data, 30))
    assert build(data).hours_built == 1
    con = connect(data)
    assert con.execute("SELECT getvariable('rollups_unsummarised')").fetchall()[0][0] == []
    con.close()
    assert_overview(report(data, "overview", hours=30).to_pylist(), overview_from_records(data, 30))


def test_an_unreadable_file_beside_a_good_one_reads_the_good_one_raw(data: Path):
    hour = END - 40 * HOUR
    write_audit(data, [record(hour + timedelta(minutes=m), decision="deny", reason="LICENSE_REVOKED")
                       for m in range(9)], name="second-writer")
    first = sorted((data / "audit").glob(f"date={hour:%Y-%m-%d}/hour={hour:%H}/*.parquet"))[0]
    damage(first, "pages")
    build(data)
    with pytest.raises(CorruptFileError, match=first.name):  # the hour is read raw: the file is named
        report(data, "trends", days=3, bucket="day")
    con = connect(data, skip_corrupt=True)
    expected = run_report(con, "trends", now=AT, days=3, bucket="day")
    assert skipped_files(con) == [str(first)]
    con.close()
    con = connect(data, skip_corrupt=True)
    drop_rollups(con)
    assert run_report(con, "trends", now=AT, days=3, bucket="day").equals(expected)
    con.close()
    assert ("deny", "LICENSE_REVOKED") in {(r["decision"], r["reason"]) for r in expected.to_pylist()}


def test_damaged_rollups_and_audit_pages_together_end(data: Path):
    build(data)
    damage(sorted((data / "rollups").glob("date=*/hours.parquet"))[0], "pages")
    damage(sorted((data / "audit").glob("date=*/hour=07/*.parquet"))[0], "pages")
    finishes(lambda: run_report(connect(data, skip_corrupt=True), "overview", now=AT, hours=30))
    rebuilt = finishes(lambda: build(data))
    assert rebuilt.days_written and len(rebuilt.skipped_files) == 1


def test_a_rollup_footer_that_cannot_be_read_reads_raw(data: Path):
    build(data)
    first = sorted((data / "rollups").glob("date=*/hours.parquet"))[0]
    raw_bytes = first.read_bytes()
    first.write_bytes(raw_bytes[:-300] + raw_bytes[-283:])
    assert_overview(report(data, "overview", hours=30).to_pylist(), overview_from_records(data, 30))
    assert build(data).days_written == [first.parent.name.removeprefix("date=")]


def test_reading_damaged_rollup_files_directly_is_an_error_not_a_loop(data: Path):
    build(data)
    damage(sorted((data / "rollups").glob("date=*/hours.parquet"))[0], "truncated")
    con = connect(data)
    with pytest.raises(CorruptFileError):
        finishes(lambda: query(con, "SELECT count(*) FROM read_parquet('rollups/date=*/*.parquet')"))
    con.close()


def test_connect_can_read_just_the_files_given(data: Path):
    files = [str(p) for p in sorted((data / "audit").glob("date=*/hour=0[12]/*.parquet"))]
    con = connect(data, files=files)
    assert query(con, "SELECT count(*) AS n FROM audit").to_pylist()[0]["n"] == sum(
        pq.read_metadata(f).num_rows for f in files)
    con.close()
    gone = files + [str(data / "audit" / "date=2026-02-27" / "hour=01" / "gone.parquet")]
    with pytest.raises(CorruptFileError, match="gone.parquet"):
        connect(data, files=gone)
    con = connect(data, files=gone, skip_corrupt=True)
    assert skipped_files(con) == [gone[-1]]
    con.close()
