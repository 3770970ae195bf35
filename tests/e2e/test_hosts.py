"""Three gateway hosts, one audit directory: real processes under signed load, one SIGKILLed and
restarted mid-load, then all stopped gracefully. Each host has its own data directory (registry,
keys, spool) and writes its own files and chain into the shared directory; the history is one.
"""
from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import aiohttp

from gateway.audit.manifest import Manifest
from gateway.auth import signed_headers
from gateway.keyfiles import audit_key
from tests.audit.conftest import add_file
from tests.conftest import DataDir, make_data_dir, portcullis, wait_until

HOSTS = ("gw1", "gw2", "gw3")


def _host(root: Path, name: str, shared: Path, extra: str = "") -> DataDir:
    root.mkdir()
    (root / "portcullis.toml").write_text(f'instance = "{name}"\n[audit]\ndirectory = "{shared}"\n{extra}')
    return make_data_dir(root, environment="prod")


async def _hammer(url: str, data: DataDir, key: str, received: list[str], stop: asyncio.Event) -> None:
    """Signed checks until ``stop`` or until the server dies, keeping every decision id received."""
    async with aiohttp.ClientSession() as session:
        i = 0
        while not stop.is_set():
            i += 1
            body = json.dumps({"license_key": key, "feature": "x", "user_id": f"u{i}"}).encode()
            headers = {"Content-Type": "application/json", **signed_headers(
                data.service.key_id, data.service.secret, "POST", "/v1/check", body, time.time())}
            try:
                async with session.post(url + "/v1/check", data=body, headers=headers) as response:
                    received.append((await response.json())["decision_id"])
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                return  # the server died under us: what we did not receive was never acknowledged


def _sql(data: DataDir, query: str) -> list[dict]:
    result = portcullis("sql", "-c", query, "--format", "json", "--data", str(data.path))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["rows"]


def _verify(data: DataDir, *args: str):
    return portcullis("audit", "verify", "--data", str(data.path), *args)


async def test_three_hosts_write_one_history(tmp_path, spawn) -> None:
    shared = tmp_path / "shared-audit"
    hosts = {name: _host(tmp_path / name, name, shared, "retention_days = 30\n" if name == "gw1" else "")
             for name in HOSTS}
    # gw1's chain lists a day far past its 30-day window: gw1's worker 0 prunes it when it starts.
    expired = add_file(shared, Manifest(shared, audit_key(hosts["gw1"].settings.keys_dir), "gw1"), 0,
                       "gw1-w0-20260101T120000000000-abcdef")
    keys = {name: data.issue(tier="unlimited").key for name, data in hosts.items()}
    servers = {name: spawn(data.path, *(("--workers", "2") if name == "gw3" else ())) for name, data in hosts.items()}
    received: dict[str, list[str]] = {name: [] for name in HOSTS}
    stop = asyncio.Event()

    def load(name: str) -> list[asyncio.Task]:
        return [asyncio.create_task(_hammer(servers[name].url, hosts[name], keys[name], received[name], stop))
                for _ in range(4)]

    clients = [task for name in HOSTS for task in load(name)]
    try:
        await wait_until(lambda: all(len(ids) >= 100 for ids in received.values()), timeout=180,
                         what="100 answers from every host")
        servers["gw2"].proc.send_signal(signal.SIGKILL)  # mid-load: its spool holds acknowledged records
        servers["gw2"].proc.wait()
        before = len(received["gw2"])
        servers["gw2"] = spawn(hosts["gw2"].path)  # recovery converts what the dead one left
        clients += load("gw2")
        await wait_until(lambda: len(received["gw2"]) >= before + 100, timeout=180, what="gw2 answering again")
    finally:
        stop.set()
        await asyncio.gather(*clients)
    for server in servers.values():
        assert server.stop() == 0

    # Every decision any client received is in the one history exactly once, from any host's view.
    rows = _sql(hosts["gw3"], "SELECT decision_id, instance FROM audit")
    trail = [row["decision_id"] for row in rows]
    assert len(trail) == len(set(trail)), "duplicated records"
    where = {row["decision_id"]: row["instance"] for row in rows}
    for name, ids in received.items():
        missing = set(ids) - set(where)
        assert not missing, f"{len(missing)} decisions {name} acknowledged are not in the history"
        assert {where[i].rsplit("-w", 1)[0] for i in ids} == {name}
    assert {row["instance"].rsplit("-w", 1)[0] for row in rows} == set(HOSTS)
    assert not (shared / expired).exists(), "gw1 pruned its day past the window"

    # verify checks every chain; another host's chain is trusted only once its key is pinned.
    unpinned = _verify(hosts["gw1"])
    assert unpinned.returncode == 1 and "(host gw2)" in unpinned.stdout and "(host gw3)" in unpinned.stdout
    assert "(host gw1)" not in unpinned.stdout
    for name in ("gw2", "gw3"):
        public = json.loads(portcullis("keys", "show", "--json", "--data", str(hosts[name].path)).stdout)["audit"]
        assert portcullis("audit", "trust", name, public, "--data", str(hosts["gw1"].path)).returncode == 0
    verified = _verify(hosts["gw1"], "--json")
    report = json.loads(verified.stdout)
    assert verified.returncode == 0, verified.stdout
    assert sorted(chain["host"] for chain in report["chains"]) == list(HOSTS)
    assert report["rows"] == len(trail)
    heads = json.loads(portcullis("audit", "head", "--json", "--data", str(hosts["gw1"].path)).stdout)["heads"]
    expect = [f"--expect-head={head['host']}={head['sha256']}" for head in heads]
    assert len(expect) == 3 and _verify(hosts["gw1"], *expect).returncode == 0

    # Tampering with one host's file is reported with that host's name; so is a file deleted by hand.
    theirs = sorted(shared.glob("date=*/hour=*/gw3-*.parquet"))[0]
    original = theirs.read_bytes()
    theirs.write_bytes(original[:100] + bytes([original[100] ^ 1]) + original[101:])
    tampered = _verify(hosts["gw1"])
    assert tampered.returncode == 1
    assert f"MODIFIED {theirs.relative_to(shared)} (host gw3)" in tampered.stdout
    theirs.write_bytes(original)
    deleted = sorted(shared.glob("date=*/hour=*/gw2-*.parquet"))[-1]
    deleted.unlink()
    assert f"MISSING {deleted.relative_to(shared)} (host gw2)" in _verify(hosts["gw1"]).stdout

    # The reports count every host: the totals of trends are the trail's (with the file deleted above).
    left = len(_sql(hosts["gw2"], "SELECT decision_id FROM audit"))
    result = portcullis("report", "trends", "--days", "1", "--format", "json", "--data", str(hosts["gw2"].path))
    assert result.returncode == 0, result.stderr
    assert sum(row["calls"] for row in json.loads(result.stdout)["rows"]) == left
    result = portcullis("report", "hosts", "--days", "1", "--format", "json", "--data", str(hosts["gw2"].path))
    counted = {row["host"]: row["decisions"] for row in json.loads(result.stdout)["rows"]}
    assert set(counted) == set(HOSTS) and sum(counted.values()) == left
