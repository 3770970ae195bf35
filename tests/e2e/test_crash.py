"""SIGKILL mid-load: every decision a client received is in the Parquet trail exactly once."""
from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

import aiohttp

from gateway.auth import signed_headers
from tests.conftest import trail_ids, wait_until


async def _hammer(url: str, creds, key: str, received: list[str]) -> None:
    """Check until the server dies, keeping the decision id of every answer received."""
    async with aiohttp.ClientSession() as session:
        i = 0
        while True:
            i += 1
            body = json.dumps({"license_key": key, "feature": "x", "user_id": f"u{i}"}).encode()
            headers = {"Content-Type": "application/json",
                       **signed_headers(creds.key_id, creds.secret, "POST", "/v1/check", body, time.time())}
            try:
                async with session.post(url + "/v1/check", data=body, headers=headers) as response:
                    answer = await response.json()
                    received.append(answer["decision_id"])
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                return  # the server died under us: whatever we did not receive was never acknowledged


async def test_sigkill_under_load_loses_and_duplicates_nothing(data_dir, spawn):
    issued = data_dir.issue(tier="unlimited")
    server = spawn(data_dir.path)
    received: list[str] = []
    clients = [asyncio.create_task(_hammer(server.url, data_dir.service, issued.key, received))
               for _ in range(16)]
    try:
        await wait_until(lambda: len(received) >= 400, timeout=120, what="400 answers under load")
    finally:  # killed mid-load, or (the wait failed) so that the clients end
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        await asyncio.gather(*clients)

    restarted = spawn(data_dir.path)  # recovery converts the dead instance's spool
    assert restarted.stop() == 0  # graceful stop flushes its own records too
    trail = trail_ids(data_dir.settings.audit_dir)
    assert len(trail) == len(set(trail)), "duplicated records"
    missing = set(received) - set(trail)
    assert not missing, f"{len(missing)} acknowledged records lost"
    verify = subprocess.run([sys.executable, "-m", "gateway", "audit", "verify", "--data", str(data_dir.path)],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
