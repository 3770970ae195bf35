"""``portcullis serve --workers 2`` as real processes: shared seats and quotas, graceful stop,
policy reloads that reach every worker, and JSON logs that carry no secret."""
from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime

import aiohttp
import duckdb
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.auth import signed_headers
from gateway.workers import STARTUP_GRACE_S
from tests.conftest import free_port, wait_until

pytestmark = pytest.mark.slow
CHECK = "/v1/check"


async def post(session: aiohttp.ClientSession, url: str, creds, path: str, doc: dict) -> tuple[int, dict]:
    body = json.dumps(doc).encode()
    headers = {"Content-Type": "application/json",
               **signed_headers(creds.key_id, creds.secret, "POST", path, body, time.time())}
    async with session.post(url + path, data=body, headers=headers) as response:
        return response.status, await response.json()


def fresh_connections() -> aiohttp.ClientSession:
    """One connection per request, so the kernel spreads them over the workers."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=64))


def start(spawn, data_dir, *args: str, workers: int = 2, **kwargs):
    """A gateway whose every worker is up (readiness alone means: at least one is)."""
    server = spawn(data_dir.path, "--workers", str(workers), *args, **kwargs)
    deadline = time.monotonic() + 60
    while server.log.read_text().count('"event": "listening"') < workers:  # each worker takes connections
        assert time.monotonic() < deadline, server.log.read_text()
        time.sleep(0.05)
    return server


def _total(exposition: str, name: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(exposition) for s in family.samples
               if s.name == name)


def trail(data_dir, where: str = "true") -> list[tuple]:
    """Audit records written to Parquet so far (none before the first file)."""
    if not list(data_dir.settings.audit_dir.glob("date=*/hour=*/*.parquet")):
        return []
    return duckdb.sql(f"SELECT decision_id, instance, endpoint, decision, reason, policy_version, error "
                      f"FROM read_parquet('{data_dir.settings.audit_dir}/date=*/hour=*/*.parquet') "
                      f"WHERE {where}").fetchall()


async def test_seats_and_quotas_are_never_over_granted_across_workers(data_dir, spawn):
    seated = data_dir.issue(tier="basic")  # 5 seats, +20 % tolerance
    metered = data_dir.issue(tier="strict", seats=1000)  # export: 10 a day, +10 % tolerance
    server = start(spawn, data_dir)
    async with fresh_connections() as session:
        seats = await asyncio.gather(*(post(session, server.url, data_dir.service, CHECK, {
            "license_key": seated.key, "feature": "view", "user_id": f"user-{i}"}) for i in range(40)))
        units = await asyncio.gather(*(post(session, server.url, data_dir.service, CHECK, {
            "license_key": metered.key, "feature": "export", "user_id": "u1", "quantity": 1}) for _ in range(60)))
    seat_grants = [body for _, body in seats if body["decision"] != "deny"]
    unit_grants = [body for _, body in units if body["decision"] != "deny"]
    assert len(seat_grants) == 6 and {b["reason"] for _, b in seats} >= {"SEAT_LIMIT_EXCEEDED"}
    assert len(unit_grants) == 11 and {b["reason"] for _, b in units} >= {"QUOTA_EXCEEDED"}
    async with fresh_connections() as session:
        async def totals() -> tuple[float, float]:
            async with session.get(server.url + "/metrics") as response:
                exposition = await response.text()
            return (_total(exposition, "portcullis_decisions_total"),
                    _total(exposition, "portcullis_audit_records_total"))

        # Each worker folds its counts into the shared metric files every second: wait for that,
        # then whichever worker answers a scrape reports every worker's decisions.
        async def folded() -> bool:
            return await totals() == (100, 100)
        await wait_until(folded, 60, "every worker's counts in the metric files")
        for _ in range(6):
            assert await totals() == (100, 100)
    assert server.stop() == 0
    with sqlite3.connect(data_dir.settings.db_path) as db:
        held = db.execute("SELECT COUNT(*) FROM seats WHERE license_id=?", (seated.license.license_id,)).fetchone()[0]
        used = db.execute("SELECT SUM(used) FROM usage WHERE license_id=?", (metered.license.license_id,)).fetchone()[0]
    assert (held, used) == (6, 11)
    instances = {row[1] for row in trail(data_dir)}
    assert len(instances) == 2, "both workers should have answered"


async def _hammer(url: str, creds, key: str, received: list[str]) -> None:
    async with aiohttp.ClientSession() as session:
        for i in range(100_000):
            try:
                status, body = await post(session, url, creds, CHECK, {"license_key": key, "feature": "x",
                                                                        "user_id": f"u{i}"})
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                return  # the server stopped: what we did not receive was never acknowledged
            if status == 200:
                received.append(body["decision_id"])


async def test_sigterm_drains_flushes_and_exits_0_without_losing_an_acknowledged_record(data_dir, spawn):
    issued = data_dir.issue(tier="unlimited")
    server = start(spawn, data_dir)
    received: list[str] = []
    clients = [asyncio.create_task(_hammer(server.url, data_dir.service, issued.key, received)) for _ in range(12)]
    while len(received) < 300:
        await asyncio.sleep(0.02)
    server.proc.send_signal(signal.SIGTERM)
    await asyncio.gather(*clients)
    assert await asyncio.to_thread(server.proc.wait, 30) == 0
    ids = [row[0] for row in trail(data_dir)]
    assert len(ids) == len(set(ids)), "duplicated records"
    missing = set(received) - set(ids)
    assert not missing, f"{len(missing)} of {len(received)} acknowledged records lost"
    assert not list((data_dir.settings.spool_dir).glob("*/*.seg*")), "spool segments left behind"


async def _versions_seen(url: str, creds, key: str, n: int = 24) -> set[str]:
    async with fresh_connections() as session:
        answers = await asyncio.gather(*(post(session, url, creds, CHECK, {"license_key": key, "feature": "x"})
                                         for _ in range(n)))
    return {body["policy_version"] for _, body in answers}


def _version_of(policy) -> str:
    return hashlib.sha256(policy.read_bytes()).hexdigest()[:12]


async def _until_every_worker_has(version: str, server, creds, key: str, timeout: float = 60.0) -> None:
    """Each worker reports its policy in ``portcullis_policy_info`` (how many workers run each
    version), whichever worker answers the scrape; then decisions must carry that version."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(server.url + "/metrics") as response:
                exposition = await response.text()
            workers = {s.labels["policy_version"]: s.value for f in text_string_to_metric_families(exposition)
                       for s in f.samples if s.name == "portcullis_policy_info"}
            if workers.get(version) == 2:
                break
            assert time.monotonic() < deadline, f"workers per version: {workers}, expected 2 on {version}:\n" + (
                server.log.read_text()[-4000:])
            await asyncio.sleep(0.2)
    assert await _versions_seen(server.url, creds, key) == {version}


async def test_policy_reloads_reach_every_worker_and_broken_ones_are_refused(data_dir, spawn):
    issued = data_dir.issue(tier="unlimited")
    policy = data_dir.settings.policy_path
    server = start(spawn, data_dir)
    original = _version_of(policy)
    await _until_every_worker_has(original, server, data_dir.service, issued.key)

    policy.write_text(policy.read_text().replace("grace_days = 7", "grace_days = 8"))
    by_api = _version_of(policy)
    async with aiohttp.ClientSession() as session:
        status, body = await post(session, server.url, data_dir.admin, "/v1/admin/policy/reload", {})
    assert status == 200 and body["policy_version"] == by_api != original and by_api in body["detail"]
    await _until_every_worker_has(by_api, server, data_dir.service, issued.key)

    policy.write_text(policy.read_text().replace("grace_days = 8", "grace_days = 9"))
    by_signal = _version_of(policy)
    os.kill(server.proc.pid, signal.SIGHUP)
    await _until_every_worker_has(by_signal, server, data_dir.service, issued.key)

    policy.write_text("[tiers.broken]\nfeatures = 3\n")
    async with aiohttp.ClientSession() as session:
        status, body = await post(session, server.url, data_dir.admin, "/v1/admin/policy/reload", {})
    assert (status, body["reason"]) == (400, "INVALID_REQUEST") and by_signal in body["detail"]
    os.kill(server.proc.pid, signal.SIGHUP)
    # The refusal by the API's worker, then one by each worker following the signal: only then is
    # it certain that every worker has tried the broken policy, and kept the one in force.
    await wait_until(lambda: server.log.read_text().count('"event": "policy_reload_failed"') == 3, 60,
                     "three refusals of the broken policy")
    await _until_every_worker_has(by_signal, server, data_dir.service, issued.key)
    assert server.stop() == 0

    reloads = trail(data_dir, "endpoint IN ('policy.reload', 'admin.policy_reload')")
    followed = {(instance, version) for _, instance, endpoint, decision, _, version, _ in reloads
                if endpoint == "policy.reload" and decision == "allow"}
    assert {v for _, v in followed} == {by_api, by_signal}
    assert len({i for i, v in followed if v == by_signal}) == 2, "each worker audits its own reload"
    refused = [row for row in reloads if row[3] == "deny"]
    assert refused and all("stays in force" in row[6] for row in refused)
    log = server.log.read_text()
    assert "policy_reload_failed" in log and "tier 'broken'" in log


async def test_json_logs_of_a_real_run_carry_no_secret(data_dir, spawn):
    issued = data_dir.issue(tier="basic")
    server = start(spawn, data_dir, env={"PORTCULLIS_ACCESS_LOG": "true",
                                                         "PORTCULLIS_LOG_LEVEL": "debug"})
    async with fresh_connections() as session:
        await post(session, server.url, data_dir.service, CHECK, {"license_key": issued.key, "feature": "view",
                                                                  "user_id": "u1"})
        await post(session, server.url, data_dir.admin, CHECK, {"license_key": issued.key, "feature": "nope"})
        bad = type(data_dir.service)(data_dir.service.key_id, "wrong-" + data_dir.service.secret)
        await post(session, server.url, bad, CHECK, {"license_key": issued.key, "feature": "view"})
        async with session.post(server.url + CHECK, data=b'{"license_key": "' + issued.key.encode() + b'"',
                                headers={"Content-Type": "application/json"}) as response:
            assert response.status == 400
    assert server.stop() == 0
    text = server.log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert any(line["event"] == "access" for line in lines)
    assert all({"time", "level", "event", "message"} <= set(line) for line in lines)
    for secret in (issued.key, data_dir.service.secret, data_dir.admin.secret):
        assert secret not in text


async def test_a_replayed_request_is_refused_by_every_worker(data_dir, spawn):
    """Nonces are shared through the registry: the same signed request, sent again and again on
    fresh connections until both workers have answered it, is accepted once and refused as a
    replay by both."""
    issued = data_dir.issue(tier="unlimited")
    # No per-address throttling (every replay must be answered), and Parquet files every 0.2 s
    # so the trail shows which worker answered while the test is still sending.
    server = start(spawn, data_dir, env={"PORTCULLIS_AUTH_FAIL_RPS": "0", "PORTCULLIS_AUDIT_ROTATE_S": "0.2"})
    body = json.dumps({"license_key": issued.key, "feature": "x"}).encode()
    headers = {"Content-Type": "application/json",
               **signed_headers(data_dir.service.key_id, data_dir.service.secret, "POST", CHECK, body, time.time())}

    async def send(session):
        async with session.post(server.url + CHECK, data=body, headers=headers) as response:
            return response.status

    statuses: list[int] = []
    async with fresh_connections() as session:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the kernel picks the worker; keep going until both have answered
            statuses += await asyncio.gather(*(send(session) for _ in range(10)))
            await asyncio.sleep(0.5)
            if len({instance for _, instance, *_ in trail(data_dir, "http_status = 401")}) == 2:
                break
    assert server.stop() == 0
    assert sorted(statuses) == [200] + [401] * (len(statuses) - 1)
    replays = trail(data_dir, "http_status = 401")
    assert len(replays) == len(statuses) - 1
    assert len({instance for _, instance, *_ in replays}) == 2, "both workers refused the replay"
    errors = duckdb.sql(f"SELECT DISTINCT auth_error FROM read_parquet('{data_dir.settings.audit_dir}"
                        "/date=*/hour=*/*.parquet') WHERE http_status = 401").fetchall()
    assert errors == [("replayed_nonce",)]


def events(log: str, name: str) -> list[dict]:
    """The JSON log lines of one event, in order."""
    lines = (json.loads(line) for line in log.splitlines() if line.startswith("{"))
    return [line for line in lines if line["event"] == name]


def worker_pids(server) -> dict[int, int]:
    """The pid of each worker index, the latest started."""
    return {e["worker"]: e["pid"] for e in events(server.log.read_text(), "worker_started")}


async def test_a_worker_killed_by_sigkill_is_replaced_and_the_replacement_serves(data_dir, spawn):
    issued = data_dir.issue(tier="unlimited")
    server = start(spawn, data_dir, env={"PORTCULLIS_INSTANCE": "gw", "PORTCULLIS_AUDIT_ROTATE_S": "0.2"})
    killed = worker_pids(server)[1]
    await asyncio.sleep(STARTUP_GRACE_S + 1)  # dying sooner is a failure at start, which stops the server
    os.kill(killed, signal.SIGKILL)
    killed_at = time.time()

    def replaced() -> bool:
        log = server.log.read_text()
        return bool(events(log, "worker_died")) and log.count('"event": "ready"') == 3
    await wait_until(replaced, 60, "worker 1 to die and its replacement to be ready")
    (died,) = events(server.log.read_text(), "worker_died")
    assert died["worker"] == 1
    assert died["code"] == -signal.SIGKILL
    replacement = worker_pids(server)[1]
    assert replacement != killed and os.path.exists(f"/proc/{replacement}")

    # Decisions by instance gw-w1 made after the kill can only come from the replacement.
    after_kill = f"instance = 'gw-w1' AND endpoint = 'check' AND ts > to_timestamp({killed_at})"

    async def answered_by_replacement() -> bool:
        await _versions_seen(server.url, data_dir.service, issued.key, n=10)
        return bool(await asyncio.to_thread(trail, data_dir, after_kill))
    await wait_until(answered_by_replacement, 60, "a decision of the replacement in the trail")
    assert server.stop() == 0
    assert len(events(server.log.read_text(), "worker_started")) == 3


def test_a_worker_that_cannot_start_stops_the_server_with_status_1(data_dir):
    """Worker 1's audit spool is held by another process (an instance id used twice): rather than
    restart it in a loop, the master stops the whole server with exit status 1."""
    spool = data_dir.settings.spool_dir / "gw-w1"
    spool.mkdir(parents=True)
    log = data_dir.path.parent / "serve.log"
    with open(spool / ".lock", "w") as lock, log.open("wb") as out:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--data", str(data_dir.path),
                                 "--port", str(free_port()), "--workers", "2"],
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PORTCULLIS_INSTANCE": "gw"})
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            code = "still running after 60 s"
        finally:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert code == 1, text[-4000:]
    (failed,) = events(text, "worker_start_failed")
    assert (failed["worker"], failed["code"]) == (1, 1)
    assert "audit spool" in text and "is used by another process" in text
    assert [e["worker"] for e in events(text, "worker_started")] == [0, 1]  # never restarted


async def test_a_worker_that_does_not_stop_within_twice_the_shutdown_timeout_is_killed(data_dir, spawn):
    server = start(spawn, data_dir, env={"PORTCULLIS_SHUTDOWN_TIMEOUT_S": "1"})
    pids = worker_pids(server)
    os.kill(pids[1], signal.SIGSTOP)  # a blocked worker: it cannot act on SIGTERM
    assert await asyncio.to_thread(server.stop, None, 60) == 1
    log = server.log.read_text()
    (killed,) = events(log, "worker_killed")
    assert killed["pid"] == pids[1]
    stopped = {e["worker"]: e["code"] for e in events(log, "worker_stopped")}
    assert stopped == {0: 0, 1: -signal.SIGKILL}  # the one that could stop did, gracefully
    (stopping,) = events(log, "stopping")
    waited = datetime.fromisoformat(killed["time"]) - datetime.fromisoformat(stopping["time"])
    assert waited.total_seconds() >= 2 * 1, "killed before its time was up"
    assert not os.path.exists(f"/proc/{pids[1]}")


async def test_a_worker_decides_and_audits_without_loading_pandas(data_dir, spawn):
    """pyarrow would import pandas on the audit encoder's first conversion (20-30 MB of the
    worker's memory budget, never used): the worker keeps it out, and its trail is still written."""
    issued = data_dir.issue(tier="unlimited")
    server = start(spawn, data_dir, workers=1, env={"PORTCULLIS_AUDIT_ROTATE_S": "0.2"})
    async with fresh_connections() as session:
        status, body = await post(session, server.url, data_dir.service, CHECK,
                                  {"license_key": issued.key, "feature": "view", "user_id": "u1"})
    assert status == 200 and body["decision"] == "allow"
    await wait_until(lambda: trail(data_dir, f"decision_id = '{body['decision_id']}'"), 30, "the record in Parquet")
    (worker,) = worker_pids(server).values()
    mapped = open(f"/proc/{worker}/maps").read()
    assert "pyarrow" in mapped and "/pandas/" not in mapped
    assert server.stop() == 0
