"""The shared registry dies mid-load (SPEC §11 "When PostgreSQL is unreachable").

Two hosts consume a quota against a PostgreSQL cluster of the test's own; the test SIGKILLs the
whole cluster under load and starts it again. While it is gone every answer that needs it is 503
``REGISTRY_UNAVAILABLE`` (never an allow whose unit was not taken), ``/readyz`` fails, and once it
is back both hosts serve again by themselves. Afterwards the units the database counts are the
allowed answers, plus at most the few requests whose commit the kill caught in flight (committed,
but its answer lost with the connection: refused, never granted twice).
"""
from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter

import aiohttp
import pytest

from tests.e2e.test_several_hosts import Hosts, _check
from tests.pg import Cluster

CLIENTS = 8  # requests in flight at once, so at most this many commits are caught by the kill


@pytest.fixture
def cluster():
    made = Cluster()
    made.start()
    yield made
    made.remove()


def _used(url: str) -> int:
    out = subprocess.run(["psql", url, "-Atc", "SELECT coalesce(sum(used), 0) FROM usage"],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip())


async def test_killing_the_registry_mid_load_refuses_with_503_and_loses_no_unit(tmp_path, cluster, spawn):
    hosts = Hosts(tmp_path, cluster.url, spawn, count=2)
    lic = await hosts.issue("bulk")
    answers: list[tuple[int, dict]] = []
    stop = asyncio.Event()

    async with aiohttp.ClientSession() as session:
        async def client(i: int) -> None:
            while not stop.is_set():
                answers.append(await _check(session, hosts.servers[i % 2].url, hosts.service, lic["key"],
                                            "export", user_id="load", quantity=1))

        async def ready(url: str) -> int:
            async with session.get(url + "/readyz") as response:
                return response.status

        load = [asyncio.create_task(client(i)) for i in range(CLIENTS)]
        await asyncio.sleep(1.0)
        cluster.kill()
        killed_at = len(answers)
        await asyncio.sleep(1.5)
        assert {await ready(s.url) for s in hosts.servers} == {503}
        cluster.start()
        deadline = time.monotonic() + 20
        while {await ready(s.url) for s in hosts.servers} != {200}:
            assert time.monotonic() < deadline, "the hosts did not recover by themselves"
            await asyncio.sleep(0.1)
        recovered_at = len(answers)
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*load)

    outcomes = Counter((status, a["decision"], a["reason"]) for status, a in answers)
    refused = outcomes.pop((503, "deny", "REGISTRY_UNAVAILABLE"), 0)
    assert refused > 0, "the load never met the dead registry"
    assert set(outcomes) <= {(200, "allow", "VALID")}, outcomes
    assert any(a["decision"] == "allow" for _, a in answers[recovered_at:]), "no allow after the recovery"
    assert killed_at < len(answers)
    allowed = outcomes[(200, "allow", "VALID")]
    used = _used(cluster.url)
    assert allowed <= used <= allowed + CLIENTS
