from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.audit.manifest import Manifest
from gateway.bundle import public_key_text
from gateway.cli import main
from gateway.keyfiles import audit_key
from tests.audit.conftest import add_file


@pytest.fixture
def data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    manifest = Manifest(data / "audit", audit_key(data / "keys"))
    for n, hour in enumerate((0, 0, 0, 1)):
        add_file(data / "audit", manifest, hour, f"w0-{n}")
    return data


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["audit", *args])
    return result.exit_code, result.stdout, result.stderr


def test_verify_an_intact_trail(data: Path) -> None:
    code, out, _ = _run("verify", "--data", str(data))
    assert code == 0 and out.startswith("OK: 4 files, 12 rows, 4 manifest entries; head seq 4")
    code, out, _ = _run("verify", "--data", str(data), "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["problems"] == [] and report["head"]["seq"] == 4


def test_verify_names_each_problem_and_fails(data: Path) -> None:
    hour = data / "audit/date=2026-01-01/hour=12"
    (hour / "w0-0.parquet").unlink()
    (hour / "stray.parquet").write_bytes(b"PAR1")
    code, out, _ = _run("verify", "--data", str(data))
    assert code == 1
    assert "MISSING date=2026-01-01/hour=12/w0-0.parquet" in out
    assert "UNLISTED date=2026-01-01/hour=12/stray.parquet" in out
    assert out.splitlines()[-1].startswith("FAILED: 2 problem(s)")
    code, out, _ = _run("verify", "--data", str(data), "--json")
    assert code == 1 and {p["kind"] for p in json.loads(out)["problems"]} == {"missing", "unlisted"}


def test_head_and_verify_against_a_recorded_head(data: Path) -> None:
    code, out, _ = _run("head", "--data", str(data), "--json")
    head = json.loads(out)
    assert code == 0 and head["seq"] == 4 and len(head["sha256"]) == 64
    assert _run("head", "--data", str(data))[1].strip() == f"seq 4 sha256 {head['sha256']}"
    assert _run("verify", "--data", str(data), "--expect-head", head["sha256"])[0] == 0
    code, out, _ = _run("verify", "--data", str(data), "--expect-head", "f" * 64)
    assert code == 1 and "HEAD _manifest.jsonl" in out


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
    assert code == 0 and "2 files, 12 rows, 5 manifest entries" in out


def test_head_of_an_empty_trail(tmp_path: Path) -> None:
    assert _run("head", "--data", str(tmp_path))[1].strip() == "no entries yet"


def test_help() -> None:
    code, out, _ = _run("--help")
    assert code == 0 and all(command in out for command in ("verify", "compact", "head"))
    code, out, _ = _run("verify", "--help")
    assert code == 0 and "--expect-head" in out and "--json" in out and "--data" in out
