"""What a real deployment leaves in its data directory is private: after `portcullis init`, callers
and licenses, a real `serve` writing its audit trail to Parquet, and a rollup build, no file or
directory has any world bit, and by default no group bit either; with `data_group_read` the
group may read the trail, rollups and snapshots, never keys/ or the registry database."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# Private whatever data_group_read says: secrets, key hashes, and the gateway's own working state.
SECRET = ("keys", "tls", "portcullis.db", "portcullis.db-wal", "portcullis.db-shm")
WORKING = ("spool", "run", "nonces")


def portcullis(data: Path, env: dict, *args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "gateway", *args, "--data", str(data)],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def modes(data: Path) -> dict[str, int]:
    """Every path under ``data`` (and ``data`` itself, as "."), with its permission bits."""
    found = {".": stat.S_IMODE(data.stat().st_mode)}
    for path in data.rglob("*"):
        found[str(path.relative_to(data))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def deploy(data: Path, spawn, **settings: str) -> dict[str, int]:
    """Init, a caller and a license, a serve with some requests into Parquet, a rollup build: the
    modes seen while the gateway runs (its database's -wal and -shm exist then) and after."""
    env = {**os.environ, "PORTCULLIS_AUDIT_ROTATE_S": "0.2", **settings}
    portcullis(data, env, "init")
    portcullis(data, env, "caller", "add", "billing")
    portcullis(data, env, "license", "issue", "--customer", "acme", "--tier", "pro")
    server = spawn(data, env=env)
    for _ in range(5):
        request = urllib.request.Request(server.url + "/v1/check", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError):  # unauthenticated: refused, and audited
            urllib.request.urlopen(request, timeout=5)
    deadline = time.monotonic() + 60
    while not list(data.glob("audit/date=*/hour=*/*.parquet")):
        assert time.monotonic() < deadline, "no Parquet audit file"
        time.sleep(0.1)
    running = modes(data)
    assert server.stop() == 0
    portcullis(data, env, "rollup", "--grace-s", "0")
    seen = {**running, **modes(data)}
    for expected in ("portcullis.db", "portcullis.db-wal", "portcullis.db-shm", "audit/_manifest",
                     "snapshots/licenses.parquet", "snapshots/callers.parquet", "rollups", "keys/hmac_secrets.json"):
        assert expected in seen, expected
    assert any(name.startswith("audit/_manifest/") and name.endswith(".jsonl") for name in seen), "the host's chain"
    assert any(name.endswith(".parquet") and name.startswith("audit/date=") for name in seen)
    return seen


def test_by_default_nothing_is_readable_by_group_or_others(tmp_path, spawn):
    seen = deploy(tmp_path / "data", spawn)
    assert {name: oct(mode) for name, mode in seen.items() if mode & 0o077} == {}


def test_with_group_read_the_group_reads_the_trail_and_never_the_secrets(tmp_path, spawn):
    seen = deploy(tmp_path / "data", spawn, PORTCULLIS_DATA_GROUP_READ="true")
    assert {name: oct(mode) for name, mode in seen.items() if mode & 0o007} == {}, "world bits"
    for name, mode in seen.items():
        top = name.split("/")[0]
        if top in SECRET:
            assert mode & 0o077 == 0, (name, oct(mode))
        elif top not in WORKING:
            is_dir = (tmp_path / "data" / name).is_dir()
            assert mode & (0o050 if is_dir else 0o040) == (0o050 if is_dir else 0o040), (name, oct(mode))
