"""JSON log lines: the fields every line has, extras, and the guard that keeps secrets out."""
from __future__ import annotations

import io
import json
import logging

import pytest

from gateway import logs
from gateway.callers import new_key
from gateway.licenses import new_license_key


@pytest.fixture
def captured():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.configure("debug", stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_one_object_per_line_with_the_standard_fields(captured):
    logs.set_context(instance="host-w3")
    logging.getLogger("portcullis.test").info("decided %s", "x", extra={
        "event": "decision", "decision_id": "d-1", "request_id": "r-1", "license_id": "lic_a", "caller_id": "billing"})
    (line,) = captured()
    assert {"time", "level", "event", "message", "logger"} <= set(line)
    assert (line["level"], line["event"], line["message"], line["instance"]) == ("info", "decision", "decided x", "host-w3")
    assert (line["decision_id"], line["request_id"], line["license_id"], line["caller_id"]) == ("d-1", "r-1", "lic_a",
                                                                                               "billing")


def test_secrets_never_leave_whatever_the_slip(captured):
    key = new_license_key()
    _, secret = new_key()
    secret = secret.decode()
    hex_secret = "ab" * 32
    log = logging.getLogger("portcullis.test")
    log.warning("key %s secret %s", key, secret)
    log.info("fields", extra={"license_key": "anything", "secret": "hunter2", "webhook_secret": "x", "note": hex_secret,
                              "key_id": "pk_0123", "key_fp": "0123456789abcdef"})
    logs.protect("correct-horse-battery")
    log.info("hand-written secret correct-horse-battery here")
    try:
        raise ValueError(f"bad key {key}")
    except ValueError:
        log.exception("failed")
    lines = captured()
    text = json.dumps(lines)
    for value in (key, secret, hex_secret, "hunter2", "correct-horse-battery"):
        assert value not in text
    assert lines[1]["license_key"] == lines[1]["secret"] == lines[1]["webhook_secret"] == logs.REDACTED
    assert (lines[1]["key_id"], lines[1]["key_fp"]) == ("pk_0123", "0123456789abcdef")  # public: kept
    assert logs.REDACTED in lines[3]["exception"]


async def test_a_malformed_request_is_one_warning_line_not_a_traceback(captured, aiohttp_server):
    import asyncio

    from aiohttp import web

    server = await aiohttp_server(web.Application())
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nBroken header line without colon\r\n\r\n")
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    assert b" 400 " in status_line
    lines = [line for line in captured() if line["logger"] == "aiohttp.server"]
    assert [line["event"] for line in lines] == ["bad_http_request"]
    assert lines[0]["level"] == "warning" and "exception" not in lines[0]
    assert "BadHttpMessage" in lines[0]["error"] or "Invalid" in lines[0]["error"]
