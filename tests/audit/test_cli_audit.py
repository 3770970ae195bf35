from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.audit.manifest import Manifest
from gateway.bundle import public_key_text
from gateway.cli import main
from gateway.keyfiles import audit_key
from tests.audit.conftest import T0, add_file

HOUR = timedelta(hours=1)
T0_AT = datetime.fromtimestamp(T0 / 1_000_000, timezone.utc)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """The data directory of host gw1, whose chain lists four files."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "portcullis.toml").write_text('instance = "gw1"\n')
    manifest = Manifest(data / "audit", audit_key(data / "keys"), "gw1")
    for n, hour in enumerate((0, 0, 0, 1)):
        add_file(data / "audit", manifest, hour, f"w0-{n}")
    return data


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner(env=env).invoke(main, ["audit", *args])
    return result.exit_code, result.stdout, result.stderr


def test_verify_an_intact_trail(data: Path) -> None:
    code, out, _ = _run("verify", "--data", str(data))
    assert code == 0 and out.startswith("gw1: 4 files, 12 rows, 4 manifest entries; head seq 4")
    assert out.splitlines()[-1] == "OK: 1 chain(s), 4 files, 12 rows, 4 manifest entries"
    code, out, _ = _run("verify", "--data", str(data), "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["problems"] == []
    assert [(c["host"], c["head"]["seq"]) for c in report["chains"]] == [("gw1", 4)]


def test_verify_names_each_problem_and_fails(data: Path) -> None:
    hour = data / "audit/date=2026-01-01/hour=12"
    (hour / "w0-0.parquet").unlink()
    (hour / "stray.parquet").write_bytes(b"PAR1")
    code, out, _ = _run("verify", "--data", str(data))
    assert code == 1
    assert "MISSING date=2026-01-01/hour=12/w0-0.parquet (host gw1)" in out
    assert "UNLISTED date=2026-01-01/hour=12/stray.parquet (no host)" in out
    assert out.splitlines()[-1].startswith("FAILED: 2 problem(s)")
    code, out, _ = _run("verify", "--data", str(data), "--json")
    assert code == 1 and {p["kind"] for p in json.loads(out)["problems"]} == {"missing", "unlisted"}


def test_head_and_verify_against_a_recorded_head(data: Path) -> None:
    code, out, _ = _run("head", "--data", str(data), "--json")
    (head,) = json.loads(out)["heads"]
    assert code == 0 and head["host"] == "gw1" and head["seq"] == 4 and len(head["sha256"]) == 64
    assert _run("head", "--data", str(data))[1].strip() == f"gw1 seq 4 sha256 {head['sha256']}"
    assert _run("verify", "--data", str(data), "--expect-head", head["sha256"])[0] == 0, "the single-host form"
    assert _run("verify", "--data", str(data), "--expect-head", f"gw1={head['sha256']}")[0] == 0
    code, out, _ = _run("verify", "--data", str(data), "--expect-head", "f" * 64)
    assert code == 1 and "HEAD chains" in out
    code, out, _ = _run("verify", "--data", str(data), "--expect-head", f"gw2={head['sha256']}")
    assert code == 1 and "HEAD _manifest/gw2.jsonl (host gw2): no chain for host gw2" in out


def test_verify_with_a_public_key_given_outside(data: Path) -> None:
    public = public_key_text(audit_key(data / "keys").public_key())
    (data / "keys" / "audit_ed25519.pem").unlink()
    assert _run("verify", "--data", str(data), "--public-key", public)[0] == 0
    code, _, err = _run("verify", "--data", str(data))
    assert code == 1 and "no audit key" in err
    assert not (data / "keys" / "audit_ed25519.pem").exists(), "verify never creates a key"
    assert _run("verify", "--data", str(data), "--public-key", "ed25519:nonsense")[0] == 2


def test_compact_shows_progress_and_keeps_verify_green(data: Path) -> None:
    code, out, err = _run("compact", "--data", str(data), "--grace-s", "0", "--json")
    result = json.loads(out)
    assert code == 0 and [m["partition"] for m in result["merged"]] == ["date=2026-01-01/hour=12"]
    assert "[1/1] merging date=2026-01-01/hour=12" in err
    assert result["merged"][0]["rows"] == 9 and result["skipped"] == []
    code, out, _ = _run("verify", "--data", str(data))
    assert code == 0 and "gw1: 2 files, 12 rows, 5 manifest entries" in out


def test_compact_by_default_leaves_an_hour_closed_less_than_hour_closed_after_ago(tmp_path: Path) -> None:
    """Without --grace-s an hour counts as closed ``Settings.hour_closed_after`` after its end:
    with a rotation of 5,400 s that is 3 h 5 min, so the hour before last (ended 1 to 2 hours
    ago, whatever the minute now) stays as it is, and the one five hours back is merged."""
    data = tmp_path / "data"
    manifest = Manifest(data / "audit", audit_key(data / "keys"))
    this_hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    open_, closed = this_hour - 2 * HOUR, this_hour - 5 * HOUR
    for start in (open_, closed):
        for n in range(2):
            add_file(data / "audit", manifest, (start - T0_AT) // HOUR, f"w{n}")
    code, out, err = _run("compact", "--data", str(data), "--json", env={"PORTCULLIS_AUDIT_ROTATE_S": "5400"})
    assert code == 0, err
    assert [m["partition"] for m in json.loads(out)["merged"]] == [f"date={closed:%Y-%m-%d}/hour={closed:%H}"]
    assert len(list((data / "audit" / f"date={open_:%Y-%m-%d}" / f"hour={open_:%H}").glob("*.parquet"))) == 2
    code, out, _ = _run("compact", "--data", str(data), "--json", "--grace-s", "0")
    assert code == 0 and [m["partition"] for m in json.loads(out)["merged"]] == [
        f"date={open_:%Y-%m-%d}/hour={open_:%H}"]


def test_head_of_an_empty_trail(tmp_path: Path) -> None:
    assert _run("head", "--data", str(tmp_path))[1].strip() == "no entries yet"


def test_help() -> None:
    code, out, _ = _run("--help")
    assert code == 0 and all(command in out for command in ("verify", "compact", "head", "prune", "trust"))
    code, out, _ = _run("verify", "--help")
    assert code == 0 and "--expect-head" in out and "--json" in out and "--data" in out
