"""Policy impact over a planted history: exactly the decisions that change, by customer, and a
replay under the current policy that gives every recorded answer again; nothing is written."""
from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest import portcullis
from tests.impact_history import EXPECTED, NOW, PROPOSED, changes_by_customer, plant


@pytest.fixture
def planted(data_dir, tmp_path):
    counts = plant(data_dir)
    proposal = tmp_path / "proposed.toml"
    proposal.write_text(PROPOSED)
    return data_dir, proposal, counts


def _impact(data_dir, proposal, *extra: str):
    return portcullis("policy", "impact", str(proposal), "--days", "7", "--now", NOW.isoformat(),
                      "--data", str(data_dir.path), *extra)


def _snapshot(folder):
    """Every file's size and modification time; a WAL reader's shared-memory files (which SQLite
    makes for a read-only reader too, never holding data) aside."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


def test_impact_lists_exactly_the_changed_decisions_by_customer(planted):
    data_dir, proposal, counts = planted
    before = _snapshot(data_dir.path)
    done = _impact(data_dir, proposal, "--format", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert changes_by_customer(report) == {c: sorted(pairs) for c, pairs in EXPECTED.items()}
    assert report["changed"] == sum(map(len, EXPECTED.values()))
    assert {row["tier"]: row["records"] for row in report["by_tier"]} == {"basic": 4, "strict": 2, "unlimited": 1}
    assert {row["feature"]: row["records"] for row in report["by_feature"]} == {
        "view": 3, "reports.daily": 1, "export": 2, "anything": 1}
    assert len(report["examples"]) == report["changed"]  # few enough: every one is an example
    # the 403 and the unknown key never reached the engine; the record 20 days back is before the window
    assert report["replayed"] == counts["replayable"]
    # the replay under the current policy gives every planted answer again, usage and revocation included
    assert report["self_check"] == {"replayed": counts["replayable"], "reproduced": counts["replayable"], "differ": []}
    assert _snapshot(data_dir.path) == before  # registry and trail untouched


def test_impact_table_and_csv(planted):
    data_dir, proposal, _ = planted
    table = _impact(data_dir, proposal)
    assert table.returncode == 0, table.stderr
    assert "reproduces 18 of 18 recorded decisions" in table.stdout
    assert "7 decisions would change" in table.stdout
    assert "licenses: as the trail records them" in table.stdout
    csv = _impact(data_dir, proposal, "--format", "csv")
    assert csv.stdout.splitlines()[0] == "customer,before,after,records"
    assert "globex,alert/QUOTA_NEAR_LIMIT,deny/QUOTA_EXCEEDED,1" in csv.stdout


def test_unchanged_policy_changes_nothing(planted, data_dir):
    data_dir, _, counts = planted
    done = _impact(data_dir, data_dir.settings.policy_path, "--format", "json")
    report = json.loads(done.stdout)
    assert report["changed"] == 0 and report["self_check"]["reproduced"] == counts["replayable"]


def test_malformed_proposal_names_file_tier_and_field_and_replays_nothing(planted, tmp_path):
    data_dir, _, _ = planted
    bad = tmp_path / "bad.toml"
    bad.write_text(PROPOSED.replace("seats = 3", 'seats = "three"'))
    for command in (("policy", "check", str(bad)), ("policy", "impact", str(bad), "--data", str(data_dir.path))):
        done = portcullis(*command)
        assert done.returncode == 1 and done.stdout == ""
        assert f"{bad}: tier 'basic'.seats: must be an integer, got 'three'" in done.stderr
        assert "Traceback" not in done.stderr
    ok = portcullis("policy", "check", str(data_dir.settings.policy_path), "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["tiers"] == ["basic", "strict", "unlimited"]


def test_snapshot_licenses_give_the_same_changes(planted):
    """The dashboard may not read the registry: from the analytics snapshot, the same report."""
    from analytics.db import connect
    from analytics.impact import impact, snapshot_licenses
    from gateway.admin import publish_snapshots
    from gateway.policy import load_policy, parse_policy

    data_dir, proposal, counts = planted
    with data_dir.store() as store:
        publish_snapshots(data_dir.settings, store)
    current = load_policy(data_dir.settings.policy_path)
    con = connect(data_dir.path)
    licenses = snapshot_licenses(con, current)
    report = impact(con, licenses, current, parse_policy(proposal.read_bytes()), days=7, now=NOW)
    assert changes_by_customer(report) == {c: sorted(pairs) for c, pairs in EXPECTED.items()}
    assert report["self_check"]["reproduced"] == counts["replayable"]
    assert "snapshot" in report["licenses_source"]


def test_usage_before_the_window_and_seat_lapses_are_replayed(data_dir):
    """Seats taken before the window count in it (the warm-up), lapse after each policy's own
    seat_ttl_days, and a lapsed user takes a new seat: a longer time-to-live keeps two seats held
    and refuses the third user, whom the current policy let in (the fourth is refused by both)."""
    from datetime import timedelta

    from analytics.db import connect
    from analytics.impact import impact, registry_licenses
    from gateway.callers import Caller
    from gateway.policy import load_policy, parse_policy
    from gateway.port import Port, read_check
    from tests.conftest import TEST_POLICY
    from tests.impact_history import write_trail

    issued = data_dir.issue(customer="soylent", tier="strict", expires_at=NOW + timedelta(days=400))
    port, records = Port(data_dir.settings), []
    for days_ago, user in ((35, "a"), (35, "b"), (2, "c"), (1, "a"), (0.5, "d")):
        ex = port.open("check", instance="gw-test-w0", now=NOW - timedelta(days=days_ago))
        asyncio.run(port.check(ex, read_check(ex, {"license_key": issued.key, "feature": "export",
                                                   "user_id": user}), Caller("service")))
        records.append(ex.record())
    port.close()
    # a and b lapsed after 30 days: c takes a seat, a takes one again, and d finds both taken
    assert [(r.user_id, r.reason, r.seats_used) for r in records] == [
        ("a", "VALID", 1), ("b", "VALID", 2), ("c", "VALID", 1), ("a", "VALID", 2), ("d", "SEAT_LIMIT_EXCEEDED", 2)]
    write_trail(data_dir.settings.audit_dir, records)
    current = load_policy(data_dir.settings.policy_path)
    longer = parse_policy(TEST_POLICY.read_bytes().replace(b"seat_ttl_days = 30", b"seat_ttl_days = 40"))
    con = connect(data_dir.path)
    report = impact(con, registry_licenses(data_dir.settings.db_path), current, longer, days=7, now=NOW)
    assert report["self_check"] == {"replayed": 3, "reproduced": 3, "differ": []}
    assert [(e["user_id"], e["before"], e["after"]) for e in report["examples"]] == [
        ("c", "allow/VALID", "deny/SEAT_LIMIT_EXCEEDED")]


def test_self_check_names_why_answers_differ(data_dir):
    """Answers the replay cannot give again are counted under their cause: made under another
    policy than the current one, or for an environment the check named (the trail keeps the
    gateway's)."""
    from datetime import timedelta

    from analytics.db import connect
    from analytics.impact import impact, registry_licenses
    from gateway.callers import Caller
    from gateway.port import Port, read_check
    from tests.impact_history import write_trail

    issued = data_dir.issue(customer="acme", tier="basic", environments=["prod"],
                            expires_at=NOW + timedelta(days=400))
    port, records = Port(data_dir.settings), []

    def ask(days_ago: int, **fields) -> None:
        ex = port.open("check", instance="gw-test-w0", now=NOW - timedelta(days=days_ago))
        asyncio.run(port.check(ex, read_check(ex, {"license_key": issued.key, "user_id": "u1", **fields}),
                               Caller("service")))
        records.append(ex.record())

    ask(3, feature="view")  # VALID under the test policy
    data_dir.settings.policy_path.write_text(PROPOSED)  # `view` leaves tier basic
    port.reload_policy()
    ask(2, feature="view")  # FEATURE_NOT_ENTITLED under what is now the current policy
    ask(2, feature="reports.daily", environment="staging")  # ENVIRONMENT_NOT_ALLOWED
    port.close()
    assert [r.reason for r in records] == ["VALID", "FEATURE_NOT_ENTITLED", "ENVIRONMENT_NOT_ALLOWED"]
    write_trail(data_dir.settings.audit_dir, records)
    current = port.policy
    report = impact(connect(data_dir.path), registry_licenses(data_dir.settings.db_path), current, current,
                    days=7, now=NOW)
    assert report["changed"] == 0
    assert report["self_check"] == {"replayed": 3, "reproduced": 1, "differ": [
        {"cause": "decided under another policy than the current one", "records": 1},
        {"cause": "the check named an environment; the trail keeps the gateway's", "records": 1}]}
