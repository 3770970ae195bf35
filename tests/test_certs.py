"""The private PKI of the mTLS walkthrough: what it writes, and that it really works for mTLS."""
from __future__ import annotations

import ipaddress
import json
import ssl
import stat
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.verification import PolicyBuilder, Store

from gateway.certs import client_cert, new_ca, server_cert, slug, write_pki
from gateway.cli import main
from gateway.tls import ServerTLS, identity_from_der, peer_identity

NOW = datetime.now(UTC)


def load(path: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def strict(ca: x509.Certificate) -> PolicyBuilder:
    """RFC 5280 path validation as implemented by cryptography, independent of OpenSSL."""
    return PolicyBuilder().store(Store([ca])).time(NOW)


@pytest.fixture
def made(tmp_path: Path) -> dict:
    return write_pki(tmp_path / "pki", ca_name="Test CA", server_name="localhost",
                     clients=["spiffe://corp/billing", "ops-batch"], now=NOW)


def test_writes_private_keys_0600_in_a_0700_directory(made: dict, tmp_path: Path) -> None:
    keys = [made["ca"]["key"], made["server"]["key"], *(c["key"] for c in made["clients"])]
    assert all(stat.S_IMODE(Path(k).stat().st_mode) == 0o600 for k in keys)
    assert stat.S_IMODE((tmp_path / "pki").stat().st_mode) == 0o700
    assert sorted(p.name for p in (tmp_path / "pki" / "clients").iterdir()) == [
        "ops-batch.key", "ops-batch.pem", "spiffe-corp-billing.key", "spiffe-corp-billing.pem"]


def test_client_certificates_validate_and_name_their_identity(made: dict) -> None:
    ca = load(made["ca"]["cert"])
    billing, ops = (load(c["cert"]) for c in made["clients"])
    verified = strict(ca).build_client_verifier().verify(billing, [])
    assert verified.subjects == [x509.UniformResourceIdentifier("spiffe://corp/billing")]
    assert [identity_from_der(c.public_bytes(Encoding.DER)) for c in (billing, ops)] == \
        ["spiffe://corp/billing", "ops-batch"]


def test_server_certificate_validates_for_localhost_and_loopback(made: dict) -> None:
    ca, server = load(made["ca"]["cert"]), load(made["server"]["cert"])
    for name in (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                 x509.IPAddress(ipaddress.ip_address("::1"))):
        strict(ca).build_server_verifier(name).verify(server, [])


def test_server_certificate_for_an_ip_address() -> None:
    ca = new_ca("CA", now=NOW)
    leaf = server_cert(ca, "10.1.2.3", now=NOW)
    strict(ca.cert).build_server_verifier(x509.IPAddress(ipaddress.ip_address("10.1.2.3"))).verify(leaf.cert, [])


def test_roles_do_not_mix(made: dict) -> None:
    ca = load(made["ca"]["cert"])
    with pytest.raises(x509.verification.VerificationError):
        strict(ca).build_client_verifier().verify(load(made["server"]["cert"]), [])


def test_ca_may_sign_leaves_only() -> None:
    constraints = new_ca("CA", now=NOW).cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0


@pytest.mark.parametrize("identity,expected", [
    ("spiffe://corp/billing", "spiffe-corp-billing"), ("ops batch/1", "ops-batch-1"), ("://", "client")])
def test_slug(identity: str, expected: str) -> None:
    assert slug(identity) == expected


def test_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        write_pki(tmp_path, ca_name="CA", server_name="localhost", clients=[], now=NOW)


@pytest.mark.parametrize("clients", [["spiffe://a/b", "spiffe-a-b"], ["spiffe://"], ["bad://ü"]])
def test_bad_client_list_writes_nothing(tmp_path: Path, clients: list[str]) -> None:
    with pytest.raises(ValueError):
        write_pki(tmp_path / "pki", ca_name="CA", server_name="localhost", clients=clients, now=NOW)
    assert not (tmp_path / "pki").exists()


def test_uri_identity_keeps_a_readable_cn() -> None:
    leaf = client_cert(new_ca("CA", now=NOW), "spiffe://corp/team/billing", now=NOW)
    assert leaf.cert.subject.rfc4514_string() == "CN=billing"


# -- the command -------------------------------------------------------------------------------

def test_cli_make_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["certs", "make", "--out", str(tmp_path / "pki"),
                                       "--client", "spiffe://corp/billing", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["server"]["name"] == "localhost" and out["clients"][0]["identity"] == "spiffe://corp/billing"
    assert all(Path(p).exists() for p in (out["ca"]["cert"], out["server"]["key"], out["clients"][0]["cert"]))


def test_cli_make_human_output_shows_the_serve_command(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["certs", "make", "--out", str(tmp_path / "pki")])
    assert result.exit_code == 0 and "portcullis serve --tls-cert" in result.output


def test_cli_refuses_an_existing_pki(tmp_path: Path) -> None:
    runner = CliRunner()
    runner.invoke(main, ["certs", "make", "--out", str(tmp_path)])
    result = runner.invoke(main, ["certs", "make", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "not an empty directory" in result.output


def test_cli_help() -> None:
    result = CliRunner().invoke(main, ["certs", "make", "--help"])
    assert result.exit_code == 0 and "--client ID" in result.output


async def test_walkthrough_files_work_with_an_aiohttp_client(made: dict) -> None:
    async def whoami(request: web.Request) -> web.Response:
        return web.Response(text=peer_identity(request.transport.get_extra_info("ssl_object")))

    app = web.Application()
    app.router.add_get("/", whoami)
    runner = web.AppRunner(app)
    await runner.setup()
    tls = ServerTLS(made["server"]["cert"], made["server"]["key"], made["ca"]["cert"])
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.context).start()
    port = runner.addresses[0][1]
    client = ssl.create_default_context(cafile=made["ca"]["cert"])
    client.load_cert_chain(made["clients"][0]["cert"], made["clients"][0]["key"])
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"https://localhost:{port}/", ssl=client) as response:
                assert await response.text() == "spiffe://corp/billing"
            async with session.get(f"https://127.0.0.1:{port}/", ssl=client) as response:
                assert response.status == 200
    finally:
        await runner.cleanup()
