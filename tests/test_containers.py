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


GATEWAYS = ("gateway-a", "gateway-b")
OURS = {name: s for name, s in COMPOSE["services"].items() if s.get("image") == "portcullis:latest"}


def _mounts(service: str) -> dict[str, dict]:
    """A service's mounts of the shared volume, by the folder of it they mount."""
    return {m["volume"]["subpath"]: m for m in COMPOSE["services"][service]["volumes"]
            if isinstance(m, dict) and m["source"] == "portcullis-shared"}


def test_every_host_has_its_own_volume_and_the_shared_keys_read_only(tmp_path):
    """Each gateway host keeps its spool and nonce journal in a volume of its own; of the shared
    volume it mounts the keys and certificate read-only (identical on every host, SPEC §11), and
    the audit directory and snapshots it writes its own files into. `init` creates them all."""
    for name in GATEWAYS:
        own = [v for v in COMPOSE["services"][name]["volumes"] if isinstance(v, str)]
        assert own == [f"{name}:/data"] and name in COMPOSE["volumes"]
        mounts = _mounts(name)
        assert set(mounts) == {"keys", "tls", "audit", "snapshots"}
        for subpath, mount in mounts.items():
            assert mount["target"] == f"/data/{subpath}"
            assert mount.get("read_only", False) == (subpath in ("keys", "tls")), subpath
    assert COMPOSE["services"]["init"]["volumes"] == ["portcullis-shared:/data"]
    result = CliRunner().invoke(main, ["init", "--data", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert all((tmp_path / "data" / subpath).is_dir() for subpath in ("keys", "audit", "snapshots", "rollups"))


def test_the_dashboard_mounts_only_the_folders_it_reads():
    """Never keys/ or the registry: the audit trail and snapshots read-only, the rollups it builds."""
    mounts = _mounts("dashboard")
    assert set(mounts) == {"audit", "snapshots", "rollups"}
    assert len(COMPOSE["services"]["dashboard"]["volumes"]) == 3
    for subpath, mount in mounts.items():
        assert mount["target"] == f"/data/{subpath}"
        assert mount.get("read_only", False) == (subpath != "rollups"), subpath


def test_the_hosts_share_one_postgresql_registry_reachable_by_them_alone():
    services = COMPOSE["services"]
    urls = {services[name]["environment"]["PORTCULLIS_REGISTRY_URL"] for name in (*GATEWAYS, "init")}
    (url,) = urls
    assert url.startswith("postgresql://") and "@postgres:5432/" in url
    assert ":" not in url.split("//")[1].split("@")[0], "no password in the file"
    assert COMPOSE["networks"]["registry"]["internal"] is True
    on_registry = {name for name, s in services.items() if "registry" in s.get("networks", ())}
    assert on_registry == {"postgres", "init", *GATEWAYS}
    for name in GATEWAYS:
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    instances = [services[name]["environment"]["PORTCULLIS_INSTANCE"] for name in GATEWAYS]
    assert len(set(instances)) == len(GATEWAYS), "each host names its own audit files and chain"


def test_every_host_runs_the_policy_of_the_deployment():
    (config,) = {c["source"] for name in GATEWAYS for c in COMPOSE["services"][name]["configs"]}
    assert (ROOT / COMPOSE["configs"][config]["file"]).is_file()
    assert all(c["target"] == "/data/policy.toml" for name in GATEWAYS for c in COMPOSE["services"][name]["configs"])


@pytest.mark.parametrize("service, url", [*((g, "https://127.0.0.1:8080/readyz") for g in GATEWAYS),
                                          ("dashboard", "http://127.0.0.1:8501/_stcore/health")])
def test_healthchecks_probe_the_service_itself(service, url):
    check = COMPOSE["services"][service]["healthcheck"]
    assert check["test"][0] == "CMD" and url in " ".join(check["test"])


def test_configuration_is_portcullis_variables_binding_every_interface():
    services = COMPOSE["services"]
    for name in (*GATEWAYS, "dashboard", "init"):
        env = services[name]["environment"]
        assert set(env) <= SETTING_VARIABLES, set(env) - SETTING_VARIABLES
        assert env["PORTCULLIS_DATA"] == "/data"
    assert all(services[name]["environment"]["PORTCULLIS_HOST"] == "0.0.0.0" for name in GATEWAYS)
    assert services["dashboard"]["environment"]["PORTCULLIS_DASHBOARD_HOST"] == "0.0.0.0"
    for name in (*GATEWAYS, "dashboard"):
        assert all(p.startswith("127.0.0.1:") for p in services[name]["ports"]), "published on the host's loopback"
    assert "ports" not in services["postgres"]
    assert all(services["dashboard"]["depends_on"][name]["condition"] == "service_healthy" for name in GATEWAYS)
    assert all(services[name]["depends_on"]["init"]["condition"] == "service_completed_successfully"
               for name in GATEWAYS)


def test_the_dashboard_without_sign_in_shares_no_network_with_another_container():
    services = COMPOSE["services"]
    assert services["dashboard"]["environment"].get("PORTCULLIS_DASHBOARD_AUTH", "none") == "none"
    (network,) = services["dashboard"]["networks"]
    assert [name for name, s in services.items() if network in s.get("networks", ())] == ["dashboard"]


def _commands() -> list[list[str]]:
    commands = [exec_form("CMD")]
    for service in OURS.values():
        assert "entrypoint" not in service, "the image's entrypoint is portcullis"
        commands.append(service.get("command") or exec_form("CMD"))
    return commands


@pytest.mark.parametrize("argv", _commands(), ids=" ".join)
def test_every_command_run_is_a_real_cli_command_with_real_options(argv):
    assert main.get_command(None, argv[0]) is not None, f"no command {argv[0]!r}"
    result = CliRunner().invoke(main, [*argv, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output
