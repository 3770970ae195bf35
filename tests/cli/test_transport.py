"""Payloads cross the boundary encrypted (SPEC §3): off loopback, ``serve`` needs TLS unless the
operator accepts plaintext, and the container setup serves TLS from its first start."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.tls import transport
from tests.conftest import free_port, portcullis
from tests.pg import fresh_database

ROOT = Path(__file__).resolve().parent.parent.parent
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())


@pytest.mark.parametrize("host, expected", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("localhost", "loopback"), ("127.0.0.9", "loopback"),
    ("0.0.0.0", "plaintext"), ("::", "plaintext"), ("", "plaintext"), ("10.1.2.3", "plaintext"),
    ("no-such-host.invalid", "plaintext"),
])
def test_only_loopback_counts_as_not_crossing_a_network(host, expected):
    assert transport(host, tls=False) == expected
    assert transport(host, tls=True) == "tls"


@pytest.mark.parametrize("how", [["--host", "0.0.0.0"], ["--host", ""]], ids=["flag", "wildcard"])
def test_serving_plaintext_off_loopback_is_refused(data_dir, how):
    port = free_port()
    result = portcullis("serve", "--data", str(data_dir.settings.data_dir), "--port", str(port), *how)
    assert result.returncode == 2, result.stderr
    assert "is not loopback" in result.stderr and "--allow-plaintext" in result.stderr
    assert "Traceback" not in result.stderr
    with socket.socket() as probe:  # refused before anything was bound
        probe.bind(("0.0.0.0", port))


def test_the_environment_cannot_sneak_plaintext_in(data_dir):
    result = portcullis("serve", "--data", str(data_dir.settings.data_dir), "--port", str(free_port()),
                        env={"PORTCULLIS_HOST": "0.0.0.0"})
    assert result.returncode == 2 and "is not loopback" in result.stderr


def test_plaintext_when_allowed_is_warned_and_shown_in_readyz(data_dir, spawn):
    server = spawn(data_dir.settings.data_dir, "--host", "0.0.0.0", "--allow-plaintext")
    assert server.get("/readyz")["transport"] == "plaintext"
    warnings = [json.loads(line) for line in server.log.read_text().splitlines() if "plaintext_listener" in line]
    assert warnings and warnings[0]["level"] == "warning" and warnings[0]["host"] == "0.0.0.0"
    server.stop()


def test_loopback_needs_no_tls_and_says_so(data_dir, spawn):
    server = spawn(data_dir.settings.data_dir)
    assert server.get("/readyz")["transport"] == "loopback"
    assert "plaintext_listener" not in server.log.read_text()
    server.stop()


def compose_service(name: str, data: Path, registry_url: str) -> tuple[list[str], dict[str, str]]:
    """A compose service's command and environment, with the volumes' /data moved to ``data``
    and the registry to a database of the test's own."""
    service = COMPOSE["services"][name]
    env = {k: str(v).replace("/data", str(data)) for k, v in service.get("environment", {}).items()}
    if "PORTCULLIS_REGISTRY_URL" in env:
        env["PORTCULLIS_REGISTRY_URL"] = registry_url
    return [a.replace("/data", str(data)) for a in service["command"]], env


def test_the_compose_setup_serves_tls_from_its_first_start(tmp_path, spawn):
    data = tmp_path / "data"
    with fresh_database() as url:
        init, init_env = compose_service("init", data, url)
        assert portcullis(*init, "--data", str(data), env=init_env).returncode == 0
        key = (data / "tls" / "server.key").read_bytes()
        assert (data / "tls").stat().st_mode & 0o077 == 0
        assert portcullis(*init, "--data", str(data), env=init_env).returncode == 0  # init runs at every start
        assert (data / "tls" / "server.key").read_bytes() == key, "an existing tls/ is kept"

        command, env = compose_service("gateway-a", data, url)
        assert command[0] == "serve" and env["PORTCULLIS_HOST"] == "0.0.0.0"
        server = spawn(data, *command[1:], env={**os.environ, **env}, tls_ca=data / "tls" / "ca.pem")  # --port wins
        assert server.get("/readyz")["transport"] == "tls"
        assert server.get("/readyz")["checks"]["registry"] is True

        probe = COMPOSE["services"]["gateway-a"]["healthcheck"]["test"]
        assert probe[:3] == ["CMD", "python", "-c"]
        script = probe[3].replace("/data", str(data)).replace(":8080/", f":{server.port}/")
        assert subprocess.run([sys.executable, "-c", script], timeout=30).returncode == 0
        server.stop()
