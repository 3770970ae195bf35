"""Three gateway hosts, one PostgreSQL registry (SPEC §11), over real HTTP.

Three ``portcullis serve`` processes with data directories of their own (each host's audit trail,
the same ``keys/`` and ``policy.toml`` copied to each, as a deployment distributes them) share
one database: seats and quotas granted through all three never exceed the license, a request
replayed to another host is refused, and a revocation, a caller removal or a policy reload made
through one host reaches the others within a second.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import aiohttp
import pytest

from tests.conftest import Credentials, portcullis
from tests.pg import fresh_database

POLICY = """\
expiring_warn_days = 30
grace_days = 7
seat_ttl_days = 30
seat_overage_pct = 20
quota_overage_pct = 0
quota_warn_pct = 80

[tiers.team]
features = ["view"]
seats = 5

[tiers.metered]
features = ["export"]
quotas = { export = { limit = 1000, period = "month" } }

[tiers.plain]
features = ["view"]

[tiers.bulk]
features = ["export"]
quotas = { export = { limit = 1000000, period = "month" } }
"""
SEATS_GRANTED = 6  # 5 seats and the 20 % overage the policy tolerates (floor(5 × 1.2))
PROPAGATION_S = 1.0


class Hosts:
    """The hosts' servers and data directories, with the CLI run against their registry."""

    def __init__(self, root: Path, url: str, spawn, count: int = 3, **settings: str) -> None:
        self.env = {"PORTCULLIS_REGISTRY_URL": url} | {f"PORTCULLIS_{k.upper()}": v for k, v in settings.items()}
        first = root / "host-a"
        self.cli("init", "--data", str(first))
        (first / "policy.toml").write_text(POLICY)
        self.dirs = [first] + [root / f"host-{name}" for name in "bcdefgh"[:count - 1]]
        for other in self.dirs[1:]:  # keys/ and policy.toml as the deployment distributes them
            other.mkdir()
            shutil.copytree(first / "keys", other / "keys")
            shutil.copy(first / "policy.toml", other / "policy.toml")
        self.service = self.caller("service")
        self.spare = self.caller("spare")
        self.admin = self.caller("ops", "--admin")
        self.servers = [spawn(d, env={**self.env, "PORTCULLIS_INSTANCE": d.name}) for d in self.dirs]

    def cli(self, *args: str) -> dict:
        result = portcullis(*args, "--json", env=self.env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def caller(self, name: str, *flags: str) -> Credentials:
        made = self.cli("caller", "add", name, "--rate-limit", "0", *flags, "--data", str(self.dirs[0]))
        return Credentials(made["key_id"], made["secret"])

    async def known_everywhere(self, lic: dict) -> None:
        """Until every host has the license (a notification away), so a test starts from there."""
        async with aiohttp.ClientSession() as session:
            async def known(url: str) -> bool:
                status, answer = await _check(session, url, self.service, lic["key"], "none")
                return answer["reason"] != "KEY_NOT_FOUND"
            await _until(lambda: _every(known(s.url) for s in self.servers), "a new license")

    async def issue(self, tier: str) -> dict:
        """A new license, issued through the CLI, once every host knows it."""
        lic = self.cli("license", "issue", "--customer", "acme", "--tier", tier, "--expires", "2099-12-31",
                       "--data", str(self.dirs[0]))
        await self.known_everywhere(lic)
        return lic


@pytest.fixture
def hosts(tmp_path, spawn) -> Iterator[Hosts]:
    with fresh_database() as url:
        yield Hosts(tmp_path, url, spawn)


async def _post(session: aiohttp.ClientSession, base: str, path: str, creds: Credentials, doc: dict,
                headers: dict | None = None) -> tuple[int, dict, dict]:
    body = json.dumps(doc).encode()
    headers = headers or creds.headers("POST", path, body)
    async with session.post(base + path, data=body, headers={**headers, "Content-Type": "application/json"}) as r:
        return r.status, await r.json(), headers


async def _check(session, base, creds, key: str, feature: str, **extra) -> tuple[int, dict]:
    status, answer, _ = await _post(session, base, "/v1/check", creds,
                                    {"license_key": key, "feature": feature, **extra})
    return status, answer


async def test_seats_granted_through_three_hosts_never_exceed_the_license(hosts):
    lic = await hosts.issue("team")
    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(*(
            _check(session, hosts.servers[i % 3].url, hosts.service, lic["key"], "view", user_id=f"u-{i}")
            for i in range(50)))
    granted = [a for status, a in answers if a["decision"] != "deny"]
    assert len(granted) == SEATS_GRANTED
    assert Counter(a["reason"] for a in granted) == {"VALID": 5, "SEAT_OVERAGE": 1}
    assert Counter(a["reason"] for _, a in answers if a["decision"] == "deny") == {"SEAT_LIMIT_EXCEEDED": 50 - SEATS_GRANTED}


async def test_a_quota_consumed_through_three_hosts_never_goes_past_its_limit(hosts):
    lic = await hosts.issue("metered")
    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(*(
            _check(session, hosts.servers[i % 3].url, hosts.service, lic["key"], "export", user_id="batch",
                   quantity=10) for i in range(150)))
    allowed = [a for _, a in answers if a["decision"] != "deny"]
    assert len(allowed) * 10 == 1000
    assert {a["reason"] for _, a in answers if a["decision"] == "deny"} == {"QUOTA_EXCEEDED"}


async def test_a_request_replayed_to_another_host_is_refused(hosts):
    lic = await hosts.issue("team")
    doc = {"license_key": lic["key"], "feature": "view", "user_id": "u-1"}
    async with aiohttp.ClientSession() as session:
        status, first, headers = await _post(session, hosts.servers[0].url, "/v1/check", hosts.service, doc)
        assert (status, first["decision"]) == (200, "allow")
        for server in hosts.servers[1:]:
            status, again, _ = await _post(session, server.url, "/v1/check", hosts.service, doc, headers)
            assert (status, again["reason"]) == (401, "UNAUTHENTICATED"), again
            # The same caller, freshly signed: known there, so the 401 above was the replay's.
            status, fresh, _ = await _post(session, server.url, "/v1/check", hosts.service, doc)
            assert (status, fresh["decision"]) == (200, "allow"), fresh


async def _every(awaitables) -> bool:
    return all(await asyncio.gather(*awaitables))


async def _until(condition, what: str) -> float:
    """Seconds until ``condition()`` holds (polled every 20 ms); fails past the propagation bound."""
    began = time.monotonic()
    while not await condition():
        assert time.monotonic() - began < PROPAGATION_S, f"{what} did not reach every host within {PROPAGATION_S} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - began


async def test_changes_made_through_one_host_reach_the_others_within_a_second(hosts):
    lic = await hosts.issue("team")
    others = [s.url for s in hosts.servers[1:]]
    async with aiohttp.ClientSession() as session:
        async def all_say(creds, expected: tuple[int, str]) -> bool:
            answers = [await _check(session, url, creds, lic["key"], "view", user_id="u-1") for url in others]
            return all((status, a["reason"]) == expected for status, a in answers)

        assert await all_say(hosts.spare, (200, "VALID"))
        path = f"/v1/admin/licenses/{lic['license_id']}/revoke"
        status, _, _ = await _post(session, hosts.servers[0].url, path, hosts.admin, {})
        assert status == 200
        await _until(lambda: all_say(hosts.service, (200, "LICENSE_REVOKED")), "a revocation")

        removed = portcullis("caller", "remove", "spare", "--data", str(hosts.dirs[0]), env=hosts.env)
        assert removed.returncode == 0, removed.stderr
        await _until(lambda: all_say(hosts.spare, (401, "UNAUTHENTICATED")), "a caller removal")

        policy = POLICY.replace("seat_ttl_days = 30", "seat_ttl_days = 31")
        for directory in hosts.dirs:  # the new policy as the deployment distributes it
            (directory / "policy.toml").write_text(policy)
        status, reloaded, _ = await _post(session, hosts.servers[0].url, "/v1/admin/policy/reload", hosts.admin, {})
        assert status == 200
        version = reloaded["policy_version"]

        async def all_run_it() -> bool:
            states = [await (await session.get(url + "/readyz")).json() for url in others]
            return all(s["policy_version"] == version for s in states)

        await _until(all_run_it, "a policy reload")
