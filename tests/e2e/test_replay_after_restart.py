"""A signed request captured before a restart cannot be replayed after it (SPEC §3): the same
bytes, sent again to a real ``portcullis serve`` restarted after a graceful stop or a SIGKILL,
with one worker, several, or a different number than before, are refused 401 ``replayed_nonce``
by every worker, and audited so."""
from __future__ import annotations

import asyncio
import json
import signal
import time

import duckdb
import pytest

from gateway.auth import signed_headers
from tests.test_workers import fresh_connections, start

pytestmark = pytest.mark.slow
CHECK = "/v1/check"
# Every replay answered 401 (none throttled to 429); Parquet files every 0.2 s, to see which worker answered.
ENV = {"PORTCULLIS_AUTH_FAIL_RPS": "0", "PORTCULLIS_AUDIT_ROTATE_S": "0.2"}


async def send(url: str, body: bytes, headers: dict, times: int) -> list[tuple[int, dict]]:
    async def once(session):
        async with session.post(url + CHECK, data=body, headers=headers) as response:
            return response.status, await response.json()

    async with fresh_connections() as session:  # fresh connections: the kernel spreads them over the workers
        return await asyncio.gather(*(once(session) for _ in range(times)))


@pytest.mark.parametrize("before, after, stop", [
    (1, 1, signal.SIGTERM), (1, 1, signal.SIGKILL), (2, 2, signal.SIGTERM), (2, 2, signal.SIGKILL),
    (1, 2, signal.SIGKILL), (2, 1, signal.SIGKILL),
], ids=["1-term", "1-kill", "2-term", "2-kill", "1-then-2", "2-then-1"])
async def test_a_request_captured_before_a_restart_is_refused_after_it(data_dir, spawn, before, after, stop):
    issued = data_dir.issue(tier="unlimited")
    body = json.dumps({"license_key": issued.key, "feature": "x"}).encode()
    headers = {"Content-Type": "application/json",
               **signed_headers(data_dir.service.key_id, data_dir.service.secret, "POST", CHECK, body, time.time())}
    server = start(spawn, data_dir, workers=before, env=ENV)
    [(status, answer)] = await send(server.url, body, headers, 1)
    assert (status, answer["decision"]) == (200, "allow")
    server.proc.send_signal(stop)
    assert server.proc.wait(30) == (0 if stop == signal.SIGTERM else -signal.SIGKILL)

    restarted = start(spawn, data_dir, workers=after, env=ENV)
    replays: list[tuple[int, dict]] = []
    for _ in range(40):  # until every worker has refused it (a worker may start listening a little later)
        replays += await send(restarted.url, body, headers, 8)
        await asyncio.sleep(0.3)
        if len(refusals(data_dir)) == after:
            break
    assert {(status, answer["reason"]) for status, answer in replays} == {(401, "UNAUTHENTICATED")}
    assert restarted.stop() == 0
    refused = refusals(data_dir)
    assert len(refused) == after, "every worker refused the replay"
    assert sum(len(errors) for errors in refused.values()) == len(replays)
    assert {error for errors in refused.values() for error in errors} == {"replayed_nonce"}


def refusals(data_dir) -> dict[str, list[str]]:
    """auth_error of every 401 in the trail, by instance."""
    out: dict[str, list[str]] = {}
    for instance, error in duckdb.sql(f"SELECT instance, auth_error FROM read_parquet('{data_dir.settings.audit_dir}"
                                      "/date=*/hour=*/*.parquet') WHERE http_status = 401").fetchall():
        out.setdefault(instance, []).append(error)
    return out
