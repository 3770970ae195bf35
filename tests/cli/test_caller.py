"""``portcullis caller add`` gives a new caller a rate limit unless told otherwise, and the gateway
applies it: a caller stuck in a loop cannot take a whole worker before anyone set a limit.
``caller limit`` lifts it on the running gateway."""
from __future__ import annotations

import asyncio
import json
import time
import tomllib

from click.testing import CliRunner

from gateway.audit import MemorySink
from gateway.cli import main
from gateway.cli.caller import DEFAULT_RATE_LIMIT_RPS
from gateway.http.app import create_app
from tests.conftest import Credentials, make_data_dir

CHECK = "/v1/check"


def _cli(data, *args: str) -> str:
    result = CliRunner().invoke(main, [*args, "--data", str(data.path)])
    assert result.exit_code == 0, result.output
    return result.output


def _add(data, name: str, *options: str) -> Credentials:
    out = json.loads(_cli(data, "caller", "add", name, *options, "--json"))
    return Credentials(out["key_id"], out["secret"])


async def _burst(client, creds: Credentials, requests: int) -> list[int]:
    async def one() -> int:
        body = json.dumps({"license_key": "LK-x", "feature": "x"}).encode()
        response = await client.post(CHECK, data=body, headers={"Content-Type": "application/json",
                                                                **creds.headers("POST", CHECK, body)})
        return response.status

    return await asyncio.gather(*(one() for _ in range(requests)))


async def test_a_new_caller_gets_the_default_rate_limit_and_the_gateway_applies_it(aiohttp_client, tmp_path):
    data = make_data_dir(tmp_path / "d", environment="prod")
    limited, unlimited = _add(data, "limited"), _add(data, "unlimited", "--rate-limit-rps", "0")
    written = tomllib.loads(data.settings.callers_path.read_text())["callers"]
    assert written["limited"]["rate_limit_rps"] == DEFAULT_RATE_LIMIT_RPS == 100
    assert written["unlimited"]["rate_limit_rps"] == 0
    sink = MemorySink()
    client = await aiohttp_client(create_app(data.settings, sink_factory=lambda s, i: sink))
    # Six times the bucket at once: even on a slow machine, far more than refills meanwhile.
    statuses = await _burst(client, limited, 600)
    assert statuses.count(200) >= DEFAULT_RATE_LIMIT_RPS and statuses.count(429) > 0, sorted(set(statuses))
    assert set(statuses) == {200, 429}
    assert set(await _burst(client, unlimited, 600)) == {200}


async def test_caller_limit_lifts_the_limit_on_the_running_gateway(aiohttp_client, tmp_path):
    data = make_data_dir(tmp_path / "d", environment="prod")
    creds = _add(data, "busy")
    client = await aiohttp_client(create_app(data.settings, sink_factory=lambda s, i: MemorySink()))
    assert 429 in await _burst(client, creds, 600)
    assert _cli(data, "caller", "limit", "busy", "0") == "caller busy: no rate limit\n"
    assert tomllib.loads(data.settings.callers_path.read_text())["callers"]["busy"]["rate_limit_rps"] == 0
    deadline = time.monotonic() + 30  # workers look at callers.toml twice a second
    while 429 in await _burst(client, creds, 600):
        assert time.monotonic() < deadline, "the running gateway kept the old limit"
        await asyncio.sleep(0.2)
