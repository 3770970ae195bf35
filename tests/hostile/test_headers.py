"""Header floods, oversized heads and garbage on the wire: refused by aiohttp's parser limits
(400) before any handler runs, never a 5xx, audited all the same, and the gateway keeps serving."""
from __future__ import annotations

import asyncio
import random

import pytest

from gateway.http.keys import GATE

ANSWER_S = 30.0  # only bounds a failure: a server that neither answers nor closes hangs
HEAD = b"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


async def send(port: int, data: bytes, *, chunk: int = 65536, incomplete: float | None = None) -> bytes:
    """Write ``data`` (stopping early if the server hangs up) and return the status line, b"" when
    the server closed or reset the connection without one. A server that neither answers nor
    closes within ``ANSWER_S`` fails the test. With ``incomplete`` (for input that may be a
    request still to be continued), after that many seconds without an answer this side closes
    its half, and the server must then answer or close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for start in range(0, len(data), chunk):
            writer.write(data[start:start + chunk])
            await writer.drain()
        answer = reader.read()
        if incomplete is not None:
            answer = asyncio.ensure_future(answer)
            done, _ = await asyncio.wait([answer], timeout=incomplete)
            if not done:
                writer.write_eof()
        answer = await asyncio.wait_for(answer, ANSWER_S)
    except ConnectionError:
        answer = b""
    except TimeoutError:
        pytest.fail(f"the server neither answered nor closed within {ANSWER_S} s")
    finally:
        writer.close()
    return answer.split(b"\r\n", 1)[0]


async def still_serving(gateway) -> None:
    response = await gateway.client.get("/healthz")
    assert response.status == 200


@pytest.mark.parametrize("count", [129, 5_000, 100_000])
async def test_a_flood_of_headers_is_400(gateway, count):
    flood = b"".join(b"X-Flood-%d: v\r\n" % i for i in range(count))
    status = await send(gateway.client.server.port, HEAD + flood + b"Content-Length: 0\r\n\r\n")
    # A client still sending megabytes when refused may see the connection reset instead of the
    # answer: the refusal is audited all the same.
    assert status.split()[1:2] in ([b"400"], [b"431"]) or (count > 10_000 and status == b"")
    (record,) = await gateway.settled()
    assert (record.endpoint, record.decision, record.reason) == ("http.parse", "deny", "INVALID_REQUEST")
    assert record.http_status in (400, 431) and (not status or int(status.split()[1]) == record.http_status)
    assert record.error == "Too many headers received" and record.remote_addr == "127.0.0.1"
    await still_serving(gateway)


@pytest.mark.parametrize("what", ["one header value", "header name", "request line"])
async def test_oversized_heads_are_refused(gateway, what):
    big = b"a" * 100_000
    data = {"one header value": HEAD + b"X-Big: " + big + b"\r\n\r\n",
            "header name": HEAD + b"X-" + big + b": v\r\n\r\n",
            "request line": b"GET /v1/licenses/" + big + b" HTTP/1.1\r\nHost: x\r\n\r\n"}[what]
    status = await send(gateway.client.server.port, data)
    assert status.split()[1:2] in ([b"400"], [b"414"], [b"431"])
    await still_serving(gateway)


async def test_many_large_headers_within_the_limits_reach_the_gate_and_are_audited(gateway):
    """Just under aiohttp's limits (128 headers of 8 KB): an unauthenticated 401, not a crash."""
    body = b'{"license_key": "LK-x", "feature": "f"}'
    fat = b"".join(b"X-Fat-%d: %s\r\n" % (i, b"v" * 8000) for i in range(120))
    status = await send(gateway.client.server.port,
                        HEAD + fat + b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    assert status.startswith(b"HTTP/1.1 401 ")
    assert gateway.records[-1].auth_error == "missing_credentials"


@pytest.mark.parametrize("framing", [
    b"Content-Length: -1\r\n", b"Content-Length: abc\r\n", b"Content-Length: 1\r\nContent-Length: 2\r\n",
    b"Content-Length: 99999999999999999999999\r\n", b"Transfer-Encoding: gzip, chunked, x\r\n",
    b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", b"X-A: a\x00b\r\n", b"Bad Header: v\r\n",
    b" folded: continuation\r\n",
])
async def test_malformed_framing_is_400(gateway, framing):
    status = await send(gateway.client.server.port, HEAD + framing + b"\r\n{}")
    assert status.split()[1:2] == [b"400"], status
    (record,) = await gateway.settled()
    assert (record.endpoint, record.http_status, record.caller_id) == ("http.parse", 400, None)
    assert record.error and "\x00" not in record.error and len(record.error) <= 160
    await still_serving(gateway)


@pytest.mark.parametrize("method,path,status,error", [
    ("GET", "/v1/chek", 404, "Not Found: GET /v1/chek"),
    ("DELETE", "/v1/check", 405, "Method Not Allowed: DELETE /v1/check"),
    ("GET", "/v1/licenses/LK-ABCDE-FGHIJ-KLMNO-PQRST-UVWXY/keys", 404, "Not Found: GET /v1/licenses/[REDACTED]/keys"),
    ("GET", "/v1/a%0Ab%0D%0AX-Injected:%20y", 404, "Not Found: GET /v1/a%0Ab%0D%0AX-Injected:%20y"),
])
async def test_unknown_paths_and_methods_are_json_denies_and_audited(gateway, method, path, status, error):
    response = await gateway.client.request(method, path)
    assert response.status == status and (await response.json())["decision"] == "deny"
    (record,) = await gateway.settled()
    assert (record.endpoint, record.http_status, record.reason, record.error) == \
        ("http.route", status, "INVALID_REQUEST", error)


async def test_random_garbage_never_gets_a_server_error(gateway):
    rng = random.Random(20261128)
    port = gateway.client.server.port
    alphabet = [b"POST", b"GET", b" ", b"/v1/check", b"HTTP/1.1", b"\r\n", b":", b"Content-Length", b"0", b"9",
                b"Transfer-Encoding", b"chunked", b"\x00", b"\xff", b"%", b"{", b"}", b"X-Port-Key-Id"]
    answered = 0
    for _ in range(150):
        if rng.random() < 0.5:
            blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        else:
            blob = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 60)))
        status = await send(port, blob, incomplete=0.5)  # an incomplete head or body waits for more
        assert not status.split()[1:2] or not status.split()[1].startswith(b"5"), (blob, status)
        answered += status.split()[1:2] != []  # each answer is audited
    await still_serving(gateway)
    records = await gateway.settled(strays=answered)
    assert len(records) >= answered > 0 and all(r.http_status < 500 for r in records)
    assert gateway.client.server.app[GATE].lost_records == 0  # every refusal fitted the trail
