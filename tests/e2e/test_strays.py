"""A real ``portcullis serve``: requests refused before any handler (by the HTTP parser, by the
router) still land in the Parquet trail, with what refused them."""
from __future__ import annotations

import socket
import urllib.error
import urllib.request

import duckdb
import pytest

pytestmark = pytest.mark.slow


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        return sock.recv(4096).split(b"\r\n", 1)[0]


def test_parser_and_router_refusals_reach_the_parquet_trail(data_dir, spawn):
    server = spawn(data_dir.path)
    flood = b"".join(b"X-Flood-%d: v\r\n" % i for i in range(200))
    assert _raw(server.port, b"POST /v1/check HTTP/1.1\r\nHost: x\r\n" + flood + b"\r\n").split()[1] == b"400"
    assert _raw(server.port, b"POST /v1/check HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n{}"
                ).split()[1] == b"400"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(server.url + "/v1/admin/secrets", timeout=5)
    assert refused.value.code == 404
    assert server.stop() == 0  # SIGTERM: drains and converts the spool

    rows = duckdb.sql(f"SELECT endpoint, http_status, decision, reason, error, remote_addr FROM read_parquet("
                      f"'{data_dir.path}/audit/date=*/hour=*/*.parquet') ORDER BY ts").fetchall()
    assert [row[:4] for row in rows] == [("http.parse", 400, "deny", "INVALID_REQUEST")] * 2 + [
        ("http.route", 404, "deny", "INVALID_REQUEST")]
    assert rows[0][4] == "Too many headers received" and "Content-Length" in rows[1][4]
    assert rows[2][4] == "Not Found: GET /v1/admin/secrets" and {row[5] for row in rows} == {"127.0.0.1"}
