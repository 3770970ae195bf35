"""mTLS against a real aiohttp server on 127.0.0.1: who gets in, who is named, and live reload.

With TLS 1.3 the server checks the client certificate after the client has finished its side of
the handshake, so a refused client connects "successfully" and sees the alert on its first read;
with TLS 1.2 it fails while connecting. ``request`` treats both as refusal, and every negative
test runs under both versions.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.certs import CLIENT_AUTH, SERVER_AUTH, Issued, client_cert, new_ca, new_leaf, server_cert
from gateway.tls import PeerIdentityError, ServerTLS, TLSConfigError, identity_from_der, peer_identity

NOW = datetime.now(UTC)
VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]
REFUSED = (ssl.SSLError, ConnectionError)
_names = itertools.count()


@dataclass
class PKI:
    dir: Path
    ca: Issued
    ca_path: Path
    server_cert: Path
    server_key: Path

    def write(self, issued: Issued) -> tuple[Path, Path]:
        name = f"leaf{next(_names)}"
        cert, key = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        cert.write_bytes(issued.cert_pem())
        key.write_bytes(issued.key_pem())
        return cert, key

    def client(self, leaf: Issued | None, version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
               trust: Issued | None = None) -> ssl.SSLContext:
        """A client context trusting ``trust`` (default: this CA) for the server, presenting ``leaf``."""
        context = ssl.create_default_context(cadata=(trust or self.ca).cert_pem().decode())
        context.minimum_version = context.maximum_version = version
        if leaf is not None:
            context.load_cert_chain(*self.write(leaf))
        return context


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    ca = new_ca("Portcullis Test CA", now=NOW)
    ca_path = tmp_path / "ca.pem"
    ca_path.write_bytes(ca.cert_pem())
    pki = PKI(tmp_path, ca, ca_path, tmp_path / "server.pem", tmp_path / "server.key")
    replace(pki.server_cert, pki.server_key, server_cert(ca, "localhost", now=NOW))
    return pki


def replace(cert_path: Path, key_path: Path | None, issued: Issued) -> None:
    """Swap files in the way deployment tools do: write aside, then rename over."""
    pairs = [(cert_path, issued.cert_pem())] + ([(key_path, issued.key_pem())] if key_path else [])
    for path, data in pairs:
        path.with_suffix(".new").write_bytes(data)
        os.replace(path.with_suffix(".new"), path)


async def whoami(request: web.Request) -> web.Response:
    try:
        return web.Response(text=peer_identity(request.transport.get_extra_info("ssl_object")))
    except PeerIdentityError as exc:
        return web.Response(status=401, text=str(exc))


@pytest.fixture
async def serve() -> AsyncIterator:
    runners: list[web.AppRunner] = []

    async def start(tls: ServerTLS) -> int:
        app = web.Application()
        app.router.add_get("/", whoami)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.context).start()
        return runner.addresses[0][1]

    yield start
    for runner in runners:
        await runner.cleanup()


GET = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


async def connect(port: int, client: ssl.SSLContext) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="localhost")


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[int, str]:
    try:
        writer.write(GET)
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    if not raw:  # the server drops a refused TLS 1.3 client without a word
        raise ConnectionResetError("closed without an answer")
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


async def request(port: int, client: ssl.SSLContext) -> tuple[int, str, x509.Certificate]:
    """GET / over a fresh connection: (status, body, server certificate)."""
    reader, writer = await connect(port, client)
    server = x509.load_der_x509_certificate(writer.get_extra_info("ssl_object").getpeercert(binary_form=True))
    return *await exchange(reader, writer), server


async def identity(port: int, client: ssl.SSLContext) -> str:
    status, body, _ = await request(port, client)
    assert status == 200, body
    return body


async def assert_refused(port: int, client: ssl.SSLContext) -> None:
    """TLS 1.2 refuses while connecting; TLS 1.3 lets the client connect and refuses its first read."""
    if client.maximum_version == ssl.TLSVersion.TLSv1_2:
        with pytest.raises(REFUSED):
            await connect(port, client)
        return
    reader, writer = await connect(port, client)
    with pytest.raises(REFUSED):
        await exchange(reader, writer)


# -- who gets in ------------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS, ids=["tls1.2", "tls1.3"])
async def test_ca_signed_client_is_named_by_its_uri_san(pki: PKI, serve, version: ssl.TLSVersion) -> None:
    port = await serve(ServerTLS(pki.server_cert, pki.server_key, pki.ca_path))
    assert await identity(port, pki.client(client_cert(pki.ca, "spiffe://corp/billing", now=NOW), version)) == \
        "spiffe://corp/billing"


async def test_client_without_uri_san_is_named_by_its_cn(pki: PKI, serve) -> None:
    port = await serve(ServerTLS(pki.server_cert, pki.server_key, pki.ca_path))
    assert await identity(port, pki.client(client_cert(pki.ca, "billing-batch", now=NOW))) == "billing-batch"


@pytest.mark.parametrize("version", VERSIONS, ids=["tls1.2", "tls1.3"])
async def test_client_without_certificate_is_refused(pki: PKI, serve, version: ssl.TLSVersion) -> None:
    port = await serve(ServerTLS(pki.server_cert, pki.server_key, pki.ca_path))
    await assert_refused(port, pki.client(None, version))


@pytest.mark.parametrize("version", VERSIONS, ids=["tls1.2", "tls1.3"])
async def test_client_from_a_stranger_ca_is_refused(pki: PKI, serve, version: ssl.TLSVersion) -> None:
    port = await serve(ServerTLS(pki.server_cert, pki.server_key, pki.ca_path))
    stranger = new_ca("Portcullis Test CA", now=NOW)  # same name, different key
    await assert_refused(port, pki.client(client_cert(stranger, "spiffe://corp/billing", now=NOW), version))


@pytest.mark.parametrize("version", VERSIONS, ids=["tls1.2", "tls1.3"])
async def test_expired_client_certificate_is_refused(pki: PKI, serve, version: ssl.TLSVersion) -> None:
    port = await serve(ServerTLS(pki.server_cert, pki.server_key, pki.ca_path))
    expired = new_leaf(pki.ca, "old", usage=CLIENT_AUTH, uris=["spiffe://corp/old"], now=NOW - timedelta(days=3), days=1)
    await assert_refused(port, pki.client(expired, version))


@pytest.mark.parametrize("version", VERSIONS, ids=["tls1.2", "tls1.3"])
async def test_certificate_without_client_auth_usage_is_refused(pki: PKI, serve, version: ssl.TLSVersion) -> None:
    port = await serve(ServerTLS(pki.server_cert, pki.server_key, pki.ca_path))
    server_only = new_leaf(pki.ca, "svc", usage=SERVER_AUTH, uris=["spiffe://corp/svc"], now=NOW)
    await assert_refused(port, pki.client(server_only, version))


async def test_certificate_with_two_uri_sans_connects_but_has_no_identity(pki: PKI, serve) -> None:
    port = await serve(ServerTLS(pki.server_cert, pki.server_key, pki.ca_path))
    two = new_leaf(pki.ca, "two", usage=CLIENT_AUTH, uris=["spiffe://corp/a", "spiffe://corp/admin"], now=NOW)
    status, body, _ = await request(port, pki.client(two))
    assert (status, body) == (401, "client certificate has several URI SANs")


async def test_without_client_ca_tls_serves_anyone_and_names_no_one(pki: PKI, serve) -> None:
    port = await serve(ServerTLS(pki.server_cert, pki.server_key))
    status, body, _ = await request(port, pki.client(None))
    assert (status, body) == (401, "no client certificate")


def test_context_refuses_versions_below_tls_1_2(pki: PKI) -> None:
    assert ServerTLS(pki.server_cert, pki.server_key, pki.ca_path).context.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize("names,expected", [
    ({"uris": ["spiffe://corp/x"]}, "spiffe://corp/x"),
    ({"uris": ["spiffe://corp/x"], "dns_names": ["x.corp"]}, "spiffe://corp/x"),
    ({"dns_names": ["x.corp"]}, "cn"),
])
def test_identity_from_der_prefers_the_single_uri_san(pki: PKI, names: dict, expected: str) -> None:
    leaf = new_leaf(pki.ca, "cn", usage=CLIENT_AUTH, now=NOW, **names)
    assert identity_from_der(leaf.cert.public_bytes(Encoding.DER)) == expected


def test_identity_from_der_refuses_garbage() -> None:
    with pytest.raises(PeerIdentityError):
        identity_from_der(b"\x30\x03\x02\x01\x01")


# -- reload without restart -------------------------------------------------------------------

async def test_reload_swaps_the_trusted_ca_for_new_connections(pki: PKI, serve) -> None:
    tls = ServerTLS(pki.server_cert, pki.server_key, pki.ca_path)
    port = await serve(tls)
    new = new_ca("Portcullis Test CA 2", now=NOW)
    old_client = pki.client(client_cert(pki.ca, "spiffe://corp/old", now=NOW))
    new_client = pki.client(client_cert(new, "spiffe://corp/new", now=NOW))
    assert await identity(port, old_client) == "spiffe://corp/old"
    await assert_refused(port, new_client)

    assert tls.reload_if_changed() is False
    replace(pki.ca_path, None, new)
    assert tls.reload_if_changed() is True

    assert await identity(port, new_client) == "spiffe://corp/new"
    await assert_refused(port, old_client)
    assert tls.reload_if_changed() is False


async def test_reload_swaps_the_server_certificate(pki: PKI, serve) -> None:
    tls = ServerTLS(pki.server_cert, pki.server_key, pki.ca_path)
    port = await serve(tls)
    client = pki.client(client_cert(pki.ca, "spiffe://corp/billing", now=NOW))
    _, _, before = await request(port, client)
    renewed = server_cert(pki.ca, "localhost", now=NOW)
    replace(pki.server_cert, pki.server_key, renewed)
    tls.reload()
    _, _, after = await request(port, client)
    assert before.serial_number != after.serial_number == renewed.cert.serial_number


async def test_failed_reload_raises_and_keeps_serving_the_old_configuration(pki: PKI, serve) -> None:
    tls = ServerTLS(pki.server_cert, pki.server_key, pki.ca_path)
    port = await serve(tls)
    client = pki.client(client_cert(pki.ca, "spiffe://corp/billing", now=NOW))
    pki.ca_path.write_text("not a certificate\n")
    with pytest.raises(TLSConfigError, match="client CA"):
        tls.reload_if_changed()
    assert tls.reload_if_changed() is False  # not retried until the file changes again
    assert await identity(port, client) == "spiffe://corp/billing"


def test_unloadable_files_are_named_in_the_error(pki: PKI) -> None:
    with pytest.raises(TLSConfigError, match="server.key"):
        ServerTLS(pki.server_cert, pki.dir / "server.key.missing")
    with pytest.raises(TLSConfigError, match="missing-ca.pem"):
        ServerTLS(pki.server_cert, pki.server_key, pki.dir / "missing-ca.pem")


# -- session resumption -----------------------------------------------------------------------

def _fetch(port: int, client: ssl.SSLContext, session: ssl.SSLSession | None) -> tuple[str, ssl.SSLSession, bool]:
    """Blocking GET / on an ``SSLSocket`` (the only client API that can offer a saved session)."""
    with client.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                            server_hostname="localhost", session=session) as sock:
        sock.sendall(GET)
        raw = b"".join(iter(lambda: sock.recv(65536), b""))
        return raw.partition(b"\r\n\r\n")[2].decode(), sock.session, sock.session_reused


async def test_tls12_session_from_before_a_reload_cannot_resume(pki: PKI, serve) -> None:
    tls = ServerTLS(pki.server_cert, pki.server_key, pki.ca_path)
    port = await serve(tls)
    client = pki.client(client_cert(pki.ca, "spiffe://corp/billing", now=NOW), ssl.TLSVersion.TLSv1_2)
    _, session, _ = await asyncio.to_thread(_fetch, port, client, None)
    body, _, reused = await asyncio.to_thread(_fetch, port, client, session)
    assert (body, reused) == ("spiffe://corp/billing", True)  # resumption works within a generation

    tls.reload()
    with pytest.raises(REFUSED):
        await asyncio.to_thread(_fetch, port, client, session)
    body, _, reused = await asyncio.to_thread(_fetch, port, client, None)
    assert (body, reused) == ("spiffe://corp/billing", False)


async def test_tls13_issues_no_session_tickets(pki: PKI, serve) -> None:
    port = await serve(ServerTLS(pki.server_cert, pki.server_key, pki.ca_path))
    client = pki.client(client_cert(pki.ca, "spiffe://corp/billing", now=NOW), ssl.TLSVersion.TLSv1_3)
    _, session, _ = await asyncio.to_thread(_fetch, port, client, None)
    _, _, reused = await asyncio.to_thread(_fetch, port, client, session)
    assert not session.has_ticket and not reused
