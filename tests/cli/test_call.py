"""``portcullis call`` against a real gateway process: ``--wait`` covers a gateway still starting."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import DataDir, free_port

pytestmark = pytest.mark.slow


def _call(data_dir: DataDir, port: int, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PORTCULLIS_KEY_ID": data_dir.service.key_id, "PORTCULLIS_SECRET": data_dir.service.secret,
           "PORTCULLIS_URL": f"http://127.0.0.1:{port}"}
    return subprocess.Popen([sys.executable, "-m", "gateway", "call", *args, "GET", "/healthz"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_without_wait_a_gateway_not_listening_is_an_error(data_dir):
    out, _ = _call(data_dir, free_port()).communicate(timeout=60)
    assert "cannot reach" in out and "Connection refused" in out


def test_wait_sends_once_the_gateway_listens(data_dir, tmp_path):
    port = free_port()
    client, server = _call(data_dir, port, "--wait", "90"), None
    try:
        time.sleep(1.0)
        assert client.poll() is None, client.stdout.read()  # still waiting: nothing listens yet
        with (tmp_path / "serve.log").open("wb") as log:
            server = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--data", str(data_dir.path),
                                       "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
        out, _ = client.communicate(timeout=120)
        assert client.returncode == 0, out
        assert json.loads(out)["status"] == "ok"
    finally:
        client.kill()
        if server is not None:
            server.terminate()
            server.wait(timeout=60)
