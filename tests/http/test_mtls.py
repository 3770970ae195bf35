"""mTLS end to end: the gateway over TLS with a client CA, callers named by their certificate.

Certificates come from ``portcullis certs make`` and callers from ``portcullis caller add
--mtls-identity``, as in the README walkthrough. Most tests run ``create_app`` on a real TCP
socket in this process (so the audit records can be read from memory); one starts the real
``portcullis serve`` command. With TLS 1.3 a refused client certificate shows on the client's
first read, with TLS 1.2 while connecting; ``assert_refused`` accepts both.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

import gateway.http.app as app_module
from gateway.audit import MemorySink
from gateway.certs import CLIENT_AUTH, SERVER_AUTH, Issued, client_cert, new_ca, new_leaf
from gateway.cli import main
from gateway.http.app import create_app
from gateway.http.keys import TLS

NOW = datetime.now(UTC)
BILLING = "spiffe://corp/billing"
VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]
REFUSED = (ssl.SSLError, ConnectionError)


def cli(*args: str) -> dict:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@dataclass
class Pki:
    """Files written by ``portcullis certs make``, plus the CA to sign hostile certificates with."""

    dir: Path
    made: dict

    @property
    def ca_path(self) -> Path:
        return Path(self.made["ca"]["cert"])

    @property
    def ca(self) -> Issued:
        key = load_pem_private_key(Path(self.made["ca"]["key"]).read_bytes(), None)
        return Issued(key, x509.load_pem_x509_certificate(self.ca_path.read_bytes()))

    def client(self, leaf: Issued | None = None, version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3) -> ssl.SSLContext:
        """A client trusting the CA for the server, presenting ``leaf`` (default: billing's files)."""
        context = ssl.create_default_context(cafile=self.ca_path)
        context.minimum_version = context.maximum_version = version
        if leaf is None:
            context.load_cert_chain(self.made["clients"][0]["cert"], self.made["clients"][0]["key"])
        else:
            cert, key = self.dir / f"leaf-{leaf.cert.serial_number}.pem", self.dir / f"leaf-{leaf.cert.serial_number}.key"
            cert.write_bytes(leaf.cert_pem())
            key.write_bytes(leaf.key_pem())
            context.load_cert_chain(cert, key)
        return context


@pytest.fixture
def pki(tmp_path: Path, data_dir) -> Pki:
    made = cli("certs", "make", "--out", str(tmp_path / "pki"), "--client", BILLING, "--json")
    cli("caller", "add", "billing", "--mtls-identity", BILLING, "--no-key", "--data", str(data_dir.path), "--json")
    return Pki(tmp_path / "pki", made)


@pytest.fixture
async def serve(pki: Pki, data_dir, monkeypatch):
    """Start the gateway over TLS on a free port; returns (port, audit sink)."""
    monkeypatch.setattr(app_module, "TLS_POLL_INTERVAL_S", 0.05)
    runners: list[web.AppRunner] = []

    async def start(client_ca: bool = True) -> tuple[int, MemorySink]:
        settings = data_dir.settings.with_(tls_cert=pki.made["server"]["cert"], tls_key=pki.made["server"]["key"],
                                           client_ca=str(pki.ca_path) if client_ca else "")
        sink = MemorySink()
        app = create_app(settings, sink_factory=lambda s, i: sink)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=app[TLS].context).start()
        return runner.addresses[0][1], sink

    yield start
    for runner in runners:
        await runner.cleanup()


async def call(port: int, context: ssl.SSLContext, path: str = "/v1/check", body: bytes = b"",
               headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """One HTTP/1.1 request over a fresh TLS connection: (status, JSON body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
    method = "POST" if body or path.startswith("/v1/check") else "GET"
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", "Connection: close", f"Content-Length: {len(body)}",
             "Content-Type: application/json", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    if not raw:  # a refused TLS 1.3 client is dropped without a word
        raise ConnectionResetError("closed without an answer")
    head, _, payload = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


async def assert_refused(port: int, context: ssl.SSLContext) -> None:
    if context.maximum_version == ssl.TLSVersion.TLSv1_2:
        with pytest.raises(REFUSED):
            await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
        return
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
    writer.close()  # connected: TLS 1.3 verifies the client after the client's handshake is done
    with pytest.raises(REFUSED):
        await call(port, context, body=b"{}")


def check_body(key: str, feature: str = "export") -> bytes:
    return json.dumps({"license_key": key, "feature": feature, "user_id": "u-1"}).encode()


# -- who gets a decision ------------------------------------------------------------------------

async def test_the_right_client_certificate_gets_decisions(serve, data_dir, pki):
    issued = data_dir.issue(tier="unlimited")  # before start: a running gateway sees it within a second
    port, sink = await serve()
    status, body = await call(port, pki.client(), body=check_body(issued.key))
    assert (status, body["decision"], body["reason"]) == (200, "allow", "VALID")
    status, body = await call(port, pki.client(), body=check_body("LK-NOPE"))
    assert (status, body["reason"]) == (200, "KEY_NOT_FOUND")
    assert [(r.caller_id, r.auth_method, r.auth_error) for r in sink.records] == [("billing", "mtls", None)] * 2


@pytest.mark.parametrize("version", VERSIONS, ids=["tls1.2", "tls1.3"])
async def test_a_client_certificate_from_another_ca_is_refused(serve, pki, version):
    port, sink = await serve()
    stranger = new_ca("Portcullis Local CA", now=NOW)  # same name, another key
    await assert_refused(port, pki.client(client_cert(stranger, BILLING, now=NOW), version))
    assert sink.records == []  # never reached HTTP


@pytest.mark.parametrize("version", VERSIONS, ids=["tls1.2", "tls1.3"])
async def test_an_expired_client_certificate_is_refused(serve, pki, version):
    port, _ = await serve()
    expired = new_leaf(pki.ca, "billing", usage=CLIENT_AUTH, uris=[BILLING], now=NOW - timedelta(days=3), days=1)
    await assert_refused(port, pki.client(expired, version))


@pytest.mark.parametrize("version", VERSIONS, ids=["tls1.2", "tls1.3"])
async def test_a_certificate_without_client_auth_usage_is_refused(serve, pki, version):
    port, _ = await serve()
    server_only = new_leaf(pki.ca, "billing", usage=SERVER_AUTH, uris=[BILLING], now=NOW)
    await assert_refused(port, pki.client(server_only, version))


async def test_a_certificate_with_two_uri_sans_is_401_bad_client_cert_audited(serve, pki):
    port, sink = await serve()
    two = new_leaf(pki.ca, "billing", usage=CLIENT_AUTH, uris=[BILLING, "spiffe://corp/admin"], now=NOW)
    status, body = await call(port, pki.client(two), body=check_body("LK-X"))
    assert (status, body["reason"], body["detail"]) == (401, "UNAUTHENTICATED", "the request is not authenticated")
    record = sink.records[-1]
    assert (record.auth_method, record.auth_error, record.caller_id, record.http_status) == \
        ("mtls", "bad_client_cert", None, 401)


async def test_a_valid_certificate_naming_no_caller_is_401(serve, pki):
    port, sink = await serve()
    nobody = client_cert(pki.ca, "spiffe://corp/nobody", now=NOW)
    status, _ = await call(port, pki.client(nobody), body=check_body("LK-X"))
    assert status == 401 and sink.records[-1].auth_error == "bad_client_cert"


# -- HMAC over TLS ------------------------------------------------------------------------------

async def test_hmac_still_works_over_mtls(serve, data_dir, pki):
    issued = data_dir.issue(tier="unlimited")  # before start: a running gateway sees it within a second
    port, sink = await serve()
    body = check_body(issued.key)
    status, answer = await call(port, pki.client(), body=body, headers=data_dir.service.headers("POST", "/v1/check", body))
    assert (status, answer["reason"]) == (200, "VALID")
    assert (sink.records[-1].caller_id, sink.records[-1].auth_method) == ("service", "hmac")
    # A request that claims a key is judged by its signature alone, never by the certificate.
    forged = {**data_dir.service.headers("POST", "/v1/check", body), "X-Port-Signature": "0" * 64}
    status, _ = await call(port, pki.client(), body=body, headers=forged)
    assert status == 401 and sink.records[-1].auth_error == "bad_signature"


async def test_hmac_over_tls_without_client_ca(serve, data_dir, pki):
    port, sink = await serve(client_ca=False)
    anonymous = ssl.create_default_context(cafile=pki.ca_path)
    body = check_body("LK-X")
    status, _ = await call(port, anonymous, body=body, headers=data_dir.service.headers("POST", "/v1/check", body))
    assert status == 200 and sink.records[-1].caller_id == "service"
    status, _ = await call(port, pki.client(), body=body)  # a certificate alone names no one here
    assert status == 401 and sink.records[-1].auth_error == "missing_credentials"


# -- rotation without restart -------------------------------------------------------------------

async def test_replacing_the_ca_file_is_picked_up_without_restart(serve, pki):
    port, _ = await serve()
    new = new_ca("Portcullis Local CA 2", now=NOW)
    old_client = pki.client()
    new_client = pki.client(client_cert(new, BILLING, now=NOW))
    assert (await call(port, old_client, body=check_body("LK-X")))[0] == 200
    await assert_refused(port, new_client)

    aside = pki.ca_path.with_suffix(".new")
    aside.write_bytes(new.cert_pem())
    os.replace(aside, pki.ca_path)
    deadline = time.monotonic() + 10
    while True:
        try:
            if (await call(port, new_client, body=check_body("LK-X")))[0] == 200:
                break
        except REFUSED:
            pass
        assert time.monotonic() < deadline, "the new CA was not picked up"
        await asyncio.sleep(0.05)
    await assert_refused(port, old_client)


# -- the real command ---------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_portcullis_serve_with_client_ca(data_dir, pki):
    port = _free_port()
    server = pki.made["server"]
    args = [sys.executable, "-m", "gateway", "serve", "--data", str(data_dir.path), "--port", str(port),
            "--tls-cert", server["cert"], "--tls-key", server["key"], "--client-ca", str(pki.ca_path)]
    issued = data_dir.issue(tier="unlimited")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, body = await call(port, pki.client(), body=check_body(issued.key))
                break
            except (OSError, ssl.SSLError):
                assert proc.poll() is None and time.monotonic() < deadline, "portcullis serve did not start"
                await asyncio.sleep(0.2)
        assert (status, body["reason"]) == (200, "VALID")
        stranger = new_ca("Portcullis Local CA", now=NOW)
        await assert_refused(port, pki.client(client_cert(stranger, BILLING, now=NOW)))
        body = check_body(issued.key)
        status, _ = await call(port, pki.client(), body=body, headers=data_dir.service.headers("POST", "/v1/check", body))
        assert status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=30)[0].decode()
    assert "Traceback" not in output
    assert f"https://127.0.0.1:{port}" in output
