"""Caller changes reach a running ``portcullis serve`` (one worker and several) without a restart:
a key added works, a key dropped or a caller removed is refused, on every worker, within
seconds (SPEC §3); a broken ``callers.toml`` keeps the callers in force.

Each change is made with the real CLI while the gateway runs; the test then polls with fresh
connections (so the kernel spreads them over the workers) until every request gets the new
answer. It asserts only a generous deadline; the propagation times it measured are printed
(``pytest -s``) and each worker's reload is checked in its log and in the audit trail.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import tomllib
from datetime import datetime

import aiohttp
import duckdb
import pytest
import tomli_w

from tests.conftest import Credentials
from tests.test_workers import fresh_connections, post, start

pytestmark = pytest.mark.slow
CHECK = "/v1/check"
GENEROUS_S = 20.0  # what the test tolerates; the contract is seconds, and the measured times are printed
# No per-address throttle of failed authentication (every refusal must be a 401), Parquet files
# every 0.2 s.
ENV = {"PORTCULLIS_AUTH_FAIL_RPS": "0", "PORTCULLIS_AUDIT_ROTATE_S": "0.2"}


def caller_cli(data_dir, *args: str) -> dict | None:
    done = subprocess.run([sys.executable, "-m", "gateway", "caller", *args, "--data", str(data_dir.path)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout) if "--json" in args else None


async def statuses(url: str, creds: Credentials, key: str, n: int = 16) -> list[int]:
    async with fresh_connections() as session:
        answers = await asyncio.gather(*(post(session, url, creds, CHECK, {"license_key": key, "feature": "x"})
                                         for _ in range(n)))
    return [status for status, _ in answers]


async def until_every_request_gets(status: int, url: str, creds: Credentials, key: str, changed) -> float:
    """Seconds from the moment file ``changed`` was written until a round of requests on fresh
    connections all get ``status``."""
    written = changed.stat().st_mtime
    while True:
        seen = await statuses(url, creds, key)
        if set(seen) == {status}:
            return time.time() - written
        assert time.time() - written < GENEROUS_S, f"still {seen} after {GENEROUS_S} s"
        await asyncio.sleep(0.05)


def worker_switch_s(server, changed, workers: int) -> float:
    """Seconds from the write of ``changed`` until the last worker logged its reload (the
    propagation itself, without the polling client's own latency)."""
    written = changed.stat().st_mtime
    first: dict[str, float] = {}
    for line in server.log.read_text().splitlines():
        if '"callers_reload"' in line:
            entry = json.loads(line)
            at = datetime.fromisoformat(entry["time"]).timestamp()
            if at >= written - 0.001:  # the log keeps milliseconds
                first.setdefault(entry["instance"], at)
    assert len(first) == workers, first
    return max(first.values()) - written


def refusals_by_instance(data_dir) -> dict[str, set[str]]:
    """auth_error of the 401 records per instance."""
    rows = duckdb.sql(f"SELECT instance, auth_error FROM read_parquet('{data_dir.settings.audit_dir}"
                      "/date=*/hour=*/*.parquet') WHERE http_status = 401").fetchall()
    out: dict[str, set[str]] = {}
    for instance, error in rows:
        out.setdefault(instance, set()).add(error)
    return out


@pytest.mark.parametrize("workers", [1, 2])
async def test_caller_changes_reach_every_worker_without_restart(data_dir, spawn, workers):
    issued = data_dir.issue(tier="unlimited")
    server = start(spawn, data_dir, workers=workers, env=ENV)
    times: dict[str, float] = {}
    switched: dict[str, float] = {}
    callers = data_dir.settings.callers_path

    added = caller_cli(data_dir, "add", "billing", "--json")
    first = Credentials(added["key_id"], added["secret"])
    times["add"] = await until_every_request_gets(200, server.url, first, issued.key, callers)
    switched["add"] = worker_switch_s(server, callers, workers)

    rotated = caller_cli(data_dir, "rotate", "billing", "--json")
    second = Credentials(rotated["key_id"], rotated["secret"])
    times["rotate"] = await until_every_request_gets(200, server.url, second, issued.key, callers)
    switched["rotate"] = worker_switch_s(server, callers, workers)
    assert set(await statuses(server.url, first, issued.key)) == {200}, "rotation keeps the old key"

    caller_cli(data_dir, "drop-key", "billing", first.key_id)
    times["drop-key"] = await until_every_request_gets(401, server.url, first, issued.key, callers)
    switched["drop-key"] = worker_switch_s(server, callers, workers)
    assert set(await statuses(server.url, second, issued.key)) == {200}, "only the dropped key is refused"

    caller_cli(data_dir, "remove", "billing")
    times["remove"] = await until_every_request_gets(401, server.url, second, issued.key, callers)
    switched["remove"] = worker_switch_s(server, callers, workers)
    assert set(await statuses(server.url, data_dir.service, issued.key)) == {200}, "other callers unaffected"
    assert server.stop() == 0  # a graceful stop writes every acknowledged record to Parquet
    print(f"\ncaller change -> every worker reloaded (every request answered accordingly), {workers} worker(s): "
          + ", ".join(f"{change} {switched[change]:.2f} s ({seconds:.2f} s)" for change, seconds in times.items()))

    instances = {data_dir.settings.instance_id(w) for w in range(workers)}
    refused = refusals_by_instance(data_dir)
    assert set(refused) == instances and all(errors == {"unknown_key_id"} for errors in refused.values())
    reloads = duckdb.sql(f"SELECT instance, count(*) FROM read_parquet('{data_dir.settings.audit_dir}"
                         "/date=*/hour=*/*.parquet') WHERE endpoint = 'callers.reload' AND decision = 'allow' "
                         "GROUP BY instance").fetchall()
    assert {instance for instance, n in reloads if n >= 4} == instances, "every worker audits each reload"


async def test_a_broken_callers_file_keeps_the_callers_in_force(data_dir, spawn):
    issued = data_dir.issue(tier="unlimited")
    server = start(spawn, data_dir, workers=2, env=ENV)
    callers = data_dir.settings.callers_path
    good = callers.read_text()
    callers.write_text(good + "\n[callers.broken\n")
    deadline = time.monotonic() + GENEROUS_S
    while server.log.read_text().count('"event": "callers_reload_failed"') < 2:
        assert time.monotonic() < deadline, server.log.read_text()[-3000:]
        await asyncio.sleep(0.1)
    assert set(await statuses(server.url, data_dir.service, issued.key)) == {200}

    doc = tomllib.loads(good)
    doc["callers"]["narrow"]["key_ids"] = []
    callers.write_text(tomli_w.dumps(doc))  # fixed, and narrow's key taken away by hand
    await until_every_request_gets(401, server.url, data_dir.narrow, issued.key, callers)
    async with aiohttp.ClientSession() as session:
        status, _ = await post(session, server.url, data_dir.service, CHECK, {"license_key": issued.key,
                                                                              "feature": "x"})
    assert status == 200
    assert server.stop() == 0  # a graceful stop writes every acknowledged record to Parquet
    refused = duckdb.sql(f"SELECT error FROM read_parquet('{data_dir.settings.audit_dir}/date=*/hour=*/*.parquet') "
                         "WHERE endpoint = 'callers.reload' AND decision = 'deny'").fetchall()
    assert len(refused) == 2 and all("previous ones stay in force" in error and "not valid TOML" in error
                                     for (error,) in refused)
