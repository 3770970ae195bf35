"""Slow clients are cut off: a request head or body trickled byte by byte does not hold a
connection (and a handler) for ever. ``read_timeout_s`` bounds both; a body cut off is audited."""
from __future__ import annotations

import asyncio
import time
import urllib.request

import pytest

from gateway.http.app import create_app
from tests.conftest import ServerProcess, make_data_dir
from tests.hostile.conftest import SchemaSink
from tests.http.conftest import Gateway

TIMEOUT_S = 0.5


@pytest.fixture
async def impatient(aiohttp_client, tmp_path) -> Gateway:
    data = make_data_dir(tmp_path / "data", environment="prod", read_timeout_s=TIMEOUT_S)
    sink = SchemaSink()
    client = await aiohttp_client(create_app(data.settings, sink_factory=lambda settings, instance: sink))
    return Gateway(client, data, sink)


async def _trickle(port: int, head: bytes, body: bytes, pause: float) -> tuple[bytes, float]:
    """Send ``head`` at once, then ``body`` one byte per ``pause``, for as long as the server listens;
    return the answer (its head and a body of Content-Length, or b"" if closed without one) and when
    it came."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)

    async def dribble() -> None:
        for i in range(len(body)):
            await asyncio.sleep(pause)
            writer.write(body[i:i + 1])
            await writer.drain()

    sender = asyncio.create_task(dribble())
    try:
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        length = int(next(line.split(b":")[1] for line in answer.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        answer += await asyncio.wait_for(reader.readexactly(length), 5)
    except asyncio.IncompleteReadError as exc:
        answer = exc.partial
    finally:
        sender.cancel()
        writer.close()
    return answer, time.monotonic() - started


async def test_a_body_sent_byte_by_byte_is_cut_off_with_408_and_audited(impatient):
    body = b'{"license_key": "LK-x", "feature": "slow"}'
    head = b"\r\n".join([b"POST /v1/check HTTP/1.1", b"Host: x", b"Content-Type: application/json",
                         b"Content-Length: %d" % len(body),
                         *(f"{k}: {v}".encode() for k, v in impatient.data.service.headers("POST", "/v1/check", body).items())])
    # 43 bytes at 0.2 s: the whole body would arrive after 8.6 s and be answered 200; a 408 means
    # it was cut off, at the earliest when the timeout ran out.
    answer, took = await _trickle(impatient.client.server.port, head + b"\r\n\r\n", body, pause=0.2)
    assert answer.startswith(b"HTTP/1.1 408 ") and b'"reason":"INVALID_REQUEST"' in answer
    assert b"\r\nConnection: close\r\n" in answer
    assert took >= TIMEOUT_S
    record = impatient.records[-1]
    assert (record.http_status, record.endpoint, record.error) == \
        (408, "check", f"body not received within {TIMEOUT_S:g} s")


async def test_a_malformed_chunk_after_the_head_is_cut_off(impatient):
    """aiohttp reports a bad chunk that arrives after the head to no one: the read would wait for ever."""
    head = b"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer, took = await _trickle(impatient.client.server.port, head, b"z", pause=0.1)
    assert answer.startswith(b"HTTP/1.1 408 ") and took >= TIMEOUT_S
    assert impatient.records[-1].http_status == 408


async def test_a_body_that_arrives_in_time_is_not_refused(impatient):
    body = b'{"license_key": "LK-x", "feature": "f"}'
    head = b"\r\n".join([b"POST /v1/check HTTP/1.1", b"Host: x", b"Connection: close", b"Content-Type: application/json",
                         b"Content-Length: %d" % len(body),
                         *(f"{k}: {v}".encode() for k, v in impatient.data.service.headers("POST", "/v1/check", body).items())])
    answer, _ = await _trickle(impatient.client.server.port, head + b"\r\n\r\n" + body[:-1], body[-1:], pause=0.1)
    assert answer.startswith(b"HTTP/1.1 200 ")


# -- a real `portcullis serve`: the request head ------------------------------------------------

@pytest.fixture
def served(tmp_path, request):
    """A real gateway's port; its read_timeout_s is 1 unless the test passes another."""
    data = make_data_dir(tmp_path / "data")
    server = ServerProcess(data.path, env={"PORTCULLIS_READ_TIMEOUT_S": str(getattr(request, "param", 1))})
    yield server.port
    assert server.stop(timeout=60) == 0
    assert "Traceback" not in server.log.read_text()


async def test_a_request_head_sent_byte_by_byte_is_cut_off(served):
    head = b"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Slow: " + b"a" * 400
    answer, took = await _trickle(served, b"", head, pause=0.05)
    # Closed without a word (never reached a handler) once the timeout of 1 s ran out, while the
    # head was still arriving (it takes over 20 s).
    assert answer == b"" and 0.9 < took < len(head) * 0.05


@pytest.mark.parametrize("served", [10], indirect=True)
async def test_idle_connections_are_closed_and_do_not_starve_others(served):
    """Another request is answered while 50 idle connections are open, long before they are
    closed (read_timeout_s 10 s): it did not wait for them."""
    idle = [await asyncio.open_connection("127.0.0.1", served) for _ in range(50)]
    started = time.monotonic()
    answer = await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://127.0.0.1:{served}/healthz", timeout=30).read())
    assert answer and time.monotonic() - started < 5
    closed = await asyncio.wait_for(asyncio.gather(*(reader.read() for reader, _ in idle)), 60)
    assert closed == [b""] * 50
    for _, writer in idle:
        writer.close()
