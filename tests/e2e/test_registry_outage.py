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

from tests.e2e.test_several_hosts import Hosts, _check, _post
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


async def _wait_ready(session: aiohttp.ClientSession, hosts: Hosts, status: int, says: str) -> None:
    """Until every host's /readyz answers ``status`` and ``says`` it (bounded: a host must notice
    by itself)."""
    deadline = time.monotonic() + 20
    while True:
        seen = set()
        for server in hosts.servers:
            async with session.get(server.url + "/readyz") as response:
                seen.add((response.status, (await response.json())["status"]))
        if seen == {(status, says)}:
            return
        assert time.monotonic() < deadline, f"/readyz never answered {status} {says} everywhere: {seen}"
        await asyncio.sleep(0.1)


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

        load = [asyncio.create_task(client(i)) for i in range(CLIENTS)]
        await asyncio.sleep(1.0)
        cluster.kill()
        killed_at = len(answers)
        await _wait_ready(session, hosts, 503, "unavailable")
        await asyncio.sleep(1.0)
        cluster.start()
        await _wait_ready(session, hosts, 200, "ready")  # by themselves
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


async def test_the_cached_mode_answers_from_memory_with_an_alert_and_still_refuses_seats_and_quota(
        tmp_path, cluster, spawn):
    """``registry_on_unavailable = "cached"``: a check that takes no seat and no unit is decided
    from the host's copy (alert ``REGISTRY_DEGRADED``, not to be cached); one that must take some
    is still refused 503; a nonce is then held by the host, which still refuses its replay, and
    hands it to the registry once it is back, so that no other host accepts it either. /readyz
    stays 200 ("degraded"), so a balancer keeps sending traffic."""
    hosts = Hosts(tmp_path, cluster.url, spawn, count=2, registry_on_unavailable="cached")
    plain, bulk = await hosts.issue("plain"), await hosts.issue("bulk")
    url = hosts.servers[0].url
    async with aiohttp.ClientSession() as session:
        cluster.kill()
        await _wait_ready(session, hosts, 200, "degraded")  # still served, behind /readyz checks
        doc = {"license_key": plain["key"], "feature": "view"}
        status, answer, headers = await _post(session, url, "/v1/check", hosts.service, doc)
        assert (status, answer["decision"], answer["reason"], answer["cache_ttl_s"]) == \
            (200, "alert", "REGISTRY_DEGRADED", 0)
        status, replayed, _ = await _post(session, url, "/v1/check", hosts.service, doc, headers)
        assert (status, replayed["reason"]) == (401, "UNAUTHENTICATED")
        status, metered = await _check(session, url, hosts.service, bulk["key"], "export", user_id="u", quantity=1)
        assert (status, metered["reason"]) == (503, "REGISTRY_UNAVAILABLE")
        cluster.start()
        await _wait_ready(session, hosts, 200, "ready")
        status, answer = await _check(session, url, hosts.service, plain["key"], "view")
        assert (status, answer["reason"]) == (200, "VALID")
        other = hosts.servers[1].url
        status, replayed, _ = await _post(session, other, "/v1/check", hosts.service, doc, headers)
        assert (status, replayed["reason"]) == (401, "UNAUTHENTICATED"), "the outage's nonce reached the registry"
