"""Dockerfile and compose.yaml, checked without a container engine: their structure, and every
command they run is a real ``portcullis`` command with real options."""
from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from gateway.cli import main
from gateway.config import Settings

ROOT = Path(__file__).parent.parent
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
SETTING_VARIABLES = {"PORTCULLIS_DATA", "PORTCULLIS_ENV"} | {
    f"PORTCULLIS_{f.name.upper()}" for f in fields(Settings) if f.name not in ("extra", "data_dir", "environment")}


def instruction(name: str) -> list[str]:
    return re.findall(rf"^{name}\s+(.+)$", DOCKERFILE, flags=re.MULTILINE)


def exec_form(name: str) -> list[str]:
    (value,) = instruction(name)
    return json.loads(value)


def test_image_is_slim_non_root_and_installed_like_the_readme():
    (base,) = instruction("FROM")
    assert base.startswith("python:3.11") and "slim" in base
    (user,) = instruction("USER")
    assert user not in ("root", "0")
    assert any("pip install -c constraints.txt ." in run for run in instruction("RUN")), "pinned like scripts/setup"
    assert exec_form("ENTRYPOINT") == ["portcullis"]
    env = " ".join(instruction("ENV")) + DOCKERFILE
    assert "PORTCULLIS_HOST=0.0.0.0" in env and "PORTCULLIS_DASHBOARD_HOST=0.0.0.0" in env


def test_the_dashboard_mounts_only_the_folders_it_reads_of_the_gateways_volume(tmp_path):
    """The gateway has the whole data volume; the dashboard only its audit trail and snapshots
    (read-only) and the rollups it builds: never keys/ or the registry database. `init` creates
    the three folders, so the mounts exist from the first start."""
    services = COMPOSE["services"]
    (whole,) = services["gateway"]["volumes"]
    volume, target = whole.split(":")
    assert target == "/data" and volume in COMPOSE["volumes"]
    mounts = {m["volume"]["subpath"]: m for m in services["dashboard"]["volumes"]}
    assert set(mounts) == {"audit", "snapshots", "rollups"}
    for subpath, mount in mounts.items():
        assert (mount["type"], mount["source"], mount["target"]) == ("volume", volume, f"/data/{subpath}")
        assert mount.get("read_only", False) == (subpath != "rollups"), subpath
    result = CliRunner().invoke(main, ["init", "--data", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert all((tmp_path / "data" / subpath).is_dir() for subpath in mounts)


@pytest.mark.parametrize("service, url", [("gateway", "https://127.0.0.1:8080/healthz"),
                                          ("dashboard", "http://127.0.0.1:8501/_stcore/health")])
def test_healthchecks_probe_the_service_itself(service, url):
    check = COMPOSE["services"][service]["healthcheck"]
    assert check["test"][0] == "CMD" and url in " ".join(check["test"])


def test_configuration_is_portcullis_variables_binding_every_interface():
    services = COMPOSE["services"]
    for name in ("gateway", "dashboard"):
        env = services[name]["environment"]
        assert set(env) <= SETTING_VARIABLES, set(env) - SETTING_VARIABLES
        assert env["PORTCULLIS_DATA"] == "/data"
    assert services["gateway"]["environment"]["PORTCULLIS_HOST"] == "0.0.0.0"
    assert services["dashboard"]["environment"]["PORTCULLIS_DASHBOARD_HOST"] == "0.0.0.0"
    for name in ("gateway", "dashboard"):
        assert all(p.startswith("127.0.0.1:") for p in services[name]["ports"]), "published on the host's loopback"
    assert services["dashboard"]["depends_on"]["gateway"]["condition"] == "service_healthy"
    assert services["gateway"]["depends_on"]["init"]["condition"] == "service_completed_successfully"


def test_the_dashboard_without_sign_in_shares_no_network_with_another_container():
    services = COMPOSE["services"]
    assert services["dashboard"]["environment"].get("PORTCULLIS_DASHBOARD_AUTH", "none") == "none"
    (network,) = services["dashboard"]["networks"]
    assert [name for name, s in services.items() if network in s.get("networks", ())] == ["dashboard"]


def _commands() -> list[list[str]]:
    commands = [exec_form("CMD")]
    for service in COMPOSE["services"].values():
        assert "entrypoint" not in service, "the image's entrypoint is portcullis"
        commands.append(service.get("command") or exec_form("CMD"))
    return commands


@pytest.mark.parametrize("argv", _commands(), ids=" ".join)
def test_every_command_run_is_a_real_cli_command_with_real_options(argv):
    assert main.get_command(None, argv[0]) is not None, f"no command {argv[0]!r}"
    result = CliRunner().invoke(main, [*argv, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output
