"""A small private PKI for trying mTLS: one CA, a server certificate, client certificates.

It exists for the README's mTLS walkthrough and for tests; production deployments bring their
own CA (SPIFFE/SPIRE, Vault, a corporate CA). Certificate builders are pure (the clock is a
parameter); :func:`write_pki` is the only function that touches the filesystem.

Keys are ECDSA P-256 (accepted by every TLS 1.2 and 1.3 stack). Leaf certificates carry the
extended key usage for their role, so a client certificate cannot serve as a server certificate
nor the other way round, and OpenSSL refuses a server certificate presented by a client.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.keyfiles import write_private

CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
_BACKDATE = timedelta(minutes=5)  # tolerate modest clock skew between issuer and verifier


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def new_ca(name: str, *, now: datetime, days: int = 3650) -> Issued:
    """A self-signed CA that may sign leaf certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        _skeleton(subject, subject, key.public_key(), now, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Issued(key, cert)


def new_leaf(ca: Issued, common_name: str, *, usage: x509.ObjectIdentifier, now: datetime, days: int = 397,
             uris: Iterable[str] = (), dns_names: Iterable[str] = (),
             ips: Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address] = ()) -> Issued:
    """A leaf certificate for one role (``usage`` = CLIENT_AUTH or SERVER_AUTH) signed by ``ca``."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    names += [x509.DNSName(d) for d in dns_names] + [x509.IPAddress(i) for i in ips]
    builder = (
        _skeleton(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]), ca.cert.subject,
                  key.public_key(), now, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return Issued(key, builder.sign(ca.key, hashes.SHA256()))


def server_cert(ca: Issued, host: str, *, now: datetime) -> Issued:
    """Server certificate for ``host`` (a DNS name or an IP); ``localhost`` also covers loopback IPs."""
    try:
        return new_leaf(ca, host, usage=SERVER_AUTH, now=now, ips=[ipaddress.ip_address(host)])
    except ValueError:
        pass
    loopback = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")] if host == "localhost" else []
    return new_leaf(ca, host, usage=SERVER_AUTH, now=now, dns_names=[host], ips=loopback)


def client_cert(ca: Issued, identity: str, *, now: datetime) -> Issued:
    """Client certificate whose gateway identity (SPEC §3) is ``identity``.

    A URI (``spiffe://corp/billing``) becomes the single URI SAN, with the last path segment as
    a readable subject CN; anything else becomes the subject CN alone.
    """
    if "://" not in identity:
        return new_leaf(ca, identity, usage=CLIENT_AUTH, now=now)
    parts = urlsplit(identity)
    if not parts.scheme or not (parts.netloc or parts.path.strip("/")):
        raise ValueError(f"not a URI identity: {identity!r}")
    common_name = (parts.path.rstrip("/").rpartition("/")[2] or parts.netloc)[:64]
    return new_leaf(ca, common_name, usage=CLIENT_AUTH, now=now, uris=[identity])


def slug(identity: str) -> str:
    """A file name for ``identity``: ``spiffe://corp/billing`` -> ``spiffe-corp-billing``."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", identity).strip("-.") or "client"


def write_pki(out: Path, *, ca_name: str, server_name: str, clients: Iterable[str], now: datetime) -> dict[str, Any]:
    """Create a fresh PKI in ``out`` (which must be absent or empty); returns the file paths.

    Every certificate is built before anything is written, so a bad identity leaves no files.
    Private keys are written 0600 and ``out`` becomes 0700, since it holds the CA key.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty directory")
    identities = list(dict.fromkeys(clients))
    files = [f"clients/{slug(i)}" for i in identities]
    if len(set(files)) != len(files):
        raise ValueError("two client identities map to the same file name")
    ca = new_ca(ca_name, now=now)
    issued = {"ca": ca, "server": server_cert(ca, server_name, now=now)}
    issued |= {f: client_cert(ca, i, now=now) for f, i in zip(files, identities)}
    (out / "clients").mkdir(parents=True, exist_ok=True)
    paths: dict[str, dict[str, str]] = {}
    for name, item in issued.items():
        cert_path, key_path = out / f"{name}.pem", out / f"{name}.key"
        cert_path.write_bytes(item.cert_pem())
        write_private(key_path, item.key_pem())
        paths[name] = {"cert": str(cert_path), "key": str(key_path)}
    return {
        "ca": paths["ca"],
        "server": {**paths["server"], "name": server_name},
        "clients": [{**paths[f], "identity": i} for f, i in zip(files, identities)],
    }


def _skeleton(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
              now: datetime, days: int) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                         encipher_only=False, decipher_only=False)
