"""Policy impact over a planted history: exactly the decisions that change, by customer, and a
replay under the current policy that gives every recorded answer again; nothing is written."""
from __future__ import annotations

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
