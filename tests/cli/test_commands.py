"""The registry and caller commands through the real CLI (click's runner, real files)."""
from __future__ import annotations

import json
import os
import stat

import pytest
from click.testing import CliRunner

from gateway.cli import main
from tests.conftest import portcullis


@pytest.fixture
def cli(tmp_path):
    data = tmp_path / "data"
    runner = CliRunner()

    def run(*args, ok=True):
        result = runner.invoke(main, [*args, "--data", str(data)] if args[0] not in ("--help",) else list(args))
        if ok:
            assert result.exit_code == 0, result.output
        return result

    run("init")
    run.data = data
    return run


def test_every_command_has_help():
    runner = CliRunner()
    top = runner.invoke(main, ["--help"])
    assert top.exit_code == 0
    for name in main.list_commands(None):
        command = main.get_command(None, name)
        assert runner.invoke(main, [name, "--help"]).exit_code == 0, name
        for sub in getattr(command, "commands", {}):
            assert runner.invoke(main, [name, sub, "--help"]).exit_code == 0, f"{name} {sub}"


def test_init_is_idempotent_and_keys_are_private(cli):
    again = cli("init", "--json")
    assert json.loads(again.output)["created"] == []
    keys = cli.data / "keys"
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o700
    for path in keys.iterdir():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


def test_caller_add_prints_the_secret_once_and_stores_it_outside_callers_toml(cli):
    out = json.loads(cli("caller", "add", "billing", "--features", "export", "--json").output)
    assert out["key_id"].startswith("pk_") and out["secret"].startswith("ps_")
    assert out["secret"] not in (cli.data / "callers.toml").read_text()
    listed = cli("caller", "list", "--json").output
    assert out["secret"] not in listed and out["key_id"] in listed
    dup = portcullis("caller", "add", "billing", "--data", str(cli.data))
    assert (dup.returncode, dup.stdout, dup.stderr) == (1, "", "Error: caller 'billing' already exists\n")


def test_caller_rotate_keeps_the_old_key_until_dropped(cli):
    first = json.loads(cli("caller", "add", "svc", "--json").output)
    second = json.loads(cli("caller", "rotate", "svc", "--json").output)
    listed = json.loads(cli("caller", "list", "--json").output)["callers"][0]
    assert listed["key_ids"] == [first["key_id"], second["key_id"]]
    cli("caller", "drop-key", "svc", first["key_id"])
    assert json.loads(cli("caller", "list", "--json").output)["callers"][0]["key_ids"] == [second["key_id"]]
    cli("caller", "remove", "svc")
    assert json.loads(cli("caller", "list", "--json").output)["callers"] == []


def test_license_lifecycle(cli):
    issued = json.loads(cli("license", "issue", "--customer", "acme", "--tier", "pro", "--expires", "2030-01-01",
                            "--seats", "7", "--env", "prod", "--json").output)
    lid, key = issued["license_id"], issued["key"]
    assert key.startswith("LK-") and len(key) == 32
    shown = cli("license", "show", lid, "--json").output
    assert key not in shown and json.loads(shown)["seats"] == 7
    assert json.loads(cli("license", "suspend", lid, "--json").output)["status"] == "suspended"
    assert json.loads(cli("license", "resume", lid, "--json").output)["status"] == "active"
    assert json.loads(cli("license", "revoke", lid, "--json").output)["status"] == "revoked"
    assert json.loads(cli("license", "list", "--status", "revoked", "--json").output)["licenses"][0]["license_id"] == lid
    assert key not in (cli.data / "portcullis.db").read_bytes().decode("latin-1")


@pytest.mark.parametrize("action", ["resume", "suspend"])
def test_revocation_is_final(cli, action):
    lid = json.loads(cli("license", "issue", "--customer", "acme", "--tier", "pro", "--json").output)["license_id"]
    cli("license", "revoke", lid)
    refused = portcullis("license", action, lid, "--data", str(cli.data))
    assert (refused.returncode, refused.stdout, refused.stderr) == \
        (1, "", f"Error: license {lid} is revoked, and revocation is final: issue a new license\n")
    assert json.loads(cli("license", "show", lid, "--json").output)["status"] == "revoked"
    assert json.loads(cli("license", "revoke", lid, "--json").output)["status"] == "revoked"  # again: no change


@pytest.mark.parametrize("args,message", [
    (["license", "issue", "--customer", "a", "--tier", "platinum"], "unknown tier 'platinum'"),
    (["license", "issue", "--customer", "a", "--tier", "pro", "--expires", "soon"], "not an ISO date"),
    (["license", "issue", "--customer", "a", "--tier", "pro", "--seats", "0"], "seats must be at least 1"),
    (["license", "show", "lic_missing"], "no license 'lic_missing'"),
    (["license", "revoke", "lic_missing"], "no license 'lic_missing'"),
    (["caller", "remove", "ghost"], "no caller named 'ghost'"),
])
def test_bad_input_is_one_line_and_non_zero(cli, args, message):
    result = portcullis(*args, "--data", str(cli.data))
    assert result.returncode in (1, 2) and result.stdout == "" and "Traceback" not in result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert message in error  # (a usage error, exit 2, also has click's usage and --help lines)


def test_corrupt_policy_is_a_clear_error(cli):
    (cli.data / "policy.toml").write_text("[tiers.pro]\nfeatures = 1\n")
    result = cli("license", "issue", "--customer", "a", "--tier", "pro", ok=False)
    assert result.exit_code == 1 and "tier 'pro'.features" in result.output
    assert json.loads(cli("license", "list", "--json").output)["licenses"] == []  # nothing half-written
