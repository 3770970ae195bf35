"""Retention: whole days past the window are pruned from a host's own chain, recorded and signed,
so verify stays green and still catches any other missing file; nothing younger goes."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.manifest import Keys, Manifest, verify
from gateway.audit.retention import prune
from gateway.cli import main
from gateway.keyfiles import audit_key
from tests.audit.conftest import add_file

DAY = 24  # hours; add_file counts from 2026-01-01 12:00


@pytest.fixture
def trail(tmp_path: Path) -> tuple[Path, dict[str, Ed25519PrivateKey], dict[str, list[str]]]:
    """Hosts gw-a and gw-b, a file each on 2026-01-01, 02 and 03 (noon)."""
    audit = tmp_path / "audit"
    keys = {"gw-a": Ed25519PrivateKey.generate(), "gw-b": Ed25519PrivateKey.generate()}
    paths = {host: [add_file(audit, Manifest(audit, key, host), day * DAY, f"{host}-w0-2026010{day + 1}T120000000000-abcdef")
                    for day in range(3)] for host, key in keys.items()}
    return audit, keys, paths


def _verify(audit: Path, keys: dict[str, Ed25519PrivateKey]):
    return verify(audit, Keys(hosts={host: key.public_key() for host, key in keys.items()}))


def test_whole_days_past_the_window_go_and_verify_stays_green(trail, tmp_path) -> None:
    audit, keys, paths = trail
    rollups = tmp_path / "rollups"
    for day in ("2026-01-01", "2026-01-02", "2026-01-03"):
        (rollups / f"date={day}").mkdir(parents=True)
        (rollups / f"date={day}" / "hours.parquet").write_bytes(b"derived")
    # 2026-01-02 ended 2 days before now, less a minute: still inside a 2-day window.
    now = datetime(2026, 1, 4, 23, 59, tzinfo=timezone.utc)
    (pruned,) = prune(audit, keys["gw-a"], host="gw-a", now=now, retention_days=2, rollups_dir=rollups)
    assert (pruned.day, pruned.files, pruned.rows) == ("2026-01-01", 1, 3)
    assert not (audit / paths["gw-a"][0]).exists() and (audit / paths["gw-a"][1]).exists()
    assert all((audit / path).exists() for path in paths["gw-b"]), "each host prunes only its own files"
    assert sorted(p.name for p in rollups.iterdir()) == ["date=2026-01-02", "date=2026-01-03"]
    entry = list(Manifest(audit, host="gw-a").entries())[-1]
    assert entry.path == "date=2026-01-01" and entry.pruned == (paths["gw-a"][0],)
    report = _verify(audit, keys)
    assert report.ok and report.rows == 15, report.problems

    a_minute_later = datetime(2026, 1, 5, 0, 1, tzinfo=timezone.utc)
    assert [p.day for p in prune(audit, keys["gw-a"], host="gw-a", now=a_minute_later, retention_days=2)] == ["2026-01-02"]
    assert prune(audit, keys["gw-a"], host="gw-a", now=a_minute_later, retention_days=2) == []
    assert _verify(audit, keys).ok


def test_a_file_deleted_by_hand_is_still_missing(trail) -> None:
    audit, keys, paths = trail
    prune(audit, keys["gw-a"], host="gw-a", now=datetime(2026, 1, 5, 1, tzinfo=timezone.utc), retention_days=2)
    (audit / paths["gw-a"][2]).unlink()  # inside the window
    (audit / paths["gw-b"][0]).unlink()  # past gw-a's window, but gw-b's: gw-b has not pruned it
    assert sorted((p.host, p.kind, p.path) for p in _verify(audit, keys).problems) == [
        ("gw-a", "missing", paths["gw-a"][2]), ("gw-b", "missing", paths["gw-b"][0])]


def test_a_pruned_file_still_present_is_named_and_the_next_run_removes_it(trail) -> None:
    audit, keys, paths = trail
    kept = (audit / paths["gw-a"][0]).read_bytes()
    prune(audit, keys["gw-a"], host="gw-a", now=datetime(2026, 1, 4, 1, tzinfo=timezone.utc), retention_days=2)
    (audit / paths["gw-a"][0]).write_bytes(kept)  # as if the run had stopped before deleting it
    assert [(p.kind, p.path, p.host) for p in _verify(audit, keys).problems] == [("pruned", paths["gw-a"][0], "gw-a")]
    prune(audit, keys["gw-a"], host="gw-a", now=datetime(2026, 1, 4, 1, tzinfo=timezone.utc), retention_days=2)
    assert not (audit / paths["gw-a"][0]).exists() and _verify(audit, keys).ok


def test_the_prune_command(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "portcullis.toml").write_text('instance = "gw-a"\n[audit]\nretention_days = 30\n')
    manifest = Manifest(data / "audit", audit_key(data / "keys"), "gw-a")
    old = add_file(data / "audit", manifest, 0, "gw-a-w0-old")
    today = add_file(data / "audit", manifest, int((datetime.now(timezone.utc) - datetime(2026, 1, 1, 12, tzinfo=timezone.utc))
                                                     .total_seconds() // 3600), "gw-a-w0-today")
    result = CliRunner().invoke(main, ["audit", "prune", "--data", str(data)])
    assert result.exit_code == 0 and "2026-01-01: 1 files, 3 rows pruned" in result.stdout, result.output
    assert not (data / "audit" / old).exists() and (data / "audit" / today).exists()
    result = CliRunner().invoke(main, ["audit", "verify", "--data", str(data)])
    assert result.exit_code == 0, result.output
    (data / "portcullis.toml").write_text('instance = "gw-a"\n')
    result = CliRunner().invoke(main, ["audit", "prune", "--data", str(data)])
    assert result.exit_code == 2 and "retention_days is 0" in result.output
