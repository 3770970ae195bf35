"""This gateway's key material under ``data/keys/``: created on first use, mode 0600, never logged.

- ``issuer_ed25519.pem``   signs sealed license bundles this gateway issues
- ``recipient_x25519.pem`` opens sealed bundles addressed to this gateway
- ``audit_ed25519.pem``    signs the audit manifest chain
- ``fingerprint.secret``   HMAC key for ``key_fp`` (SPEC §2)
- ``hmac_secrets.json``    caller key id -> secret (SPEC §3)
- ``registry_seal.key``    seals callers' secrets in a PostgreSQL registry (:mod:`gateway.registry.seal`)
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey


def write_private(path: Path, data: bytes) -> None:
    """Atomically write ``data`` to ``path`` with mode 0600 (never readable by others, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


PrivateKey = Ed25519PrivateKey | X25519PrivateKey


def _pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load_or_create(path: Path, kind: type[PrivateKey]) -> PrivateKey:
    """The private key of ``kind`` at ``path``, generated (0600) the first time it is asked for."""
    if not path.exists():
        write_private(path, _pem(kind.generate()))
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, kind):
        raise ValueError(f"{path}: not an {kind.__name__.removesuffix('PrivateKey')} private key")
    return key


def load_or_create_ed25519(path: Path) -> Ed25519PrivateKey:
    return _load_or_create(path, Ed25519PrivateKey)


def load_or_create_x25519(path: Path) -> X25519PrivateKey:
    return _load_or_create(path, X25519PrivateKey)


def load_or_create_secret(path: Path, nbytes: int = 32) -> bytes:
    if not path.exists():
        write_private(path, secrets.token_hex(nbytes).encode())
    return bytes.fromhex(path.read_text().strip())


def issuer_key(keys_dir: Path) -> Ed25519PrivateKey:
    return load_or_create_ed25519(keys_dir / "issuer_ed25519.pem")


def recipient_key(keys_dir: Path) -> X25519PrivateKey:
    return load_or_create_x25519(keys_dir / "recipient_x25519.pem")


def audit_key_path(keys_dir: Path) -> Path:
    """Where the audit key lives; tools that must not create one check it exists first."""
    return keys_dir / "audit_ed25519.pem"


def audit_key(keys_dir: Path) -> Ed25519PrivateKey:
    return load_or_create_ed25519(audit_key_path(keys_dir))


def fingerprint_secret(keys_dir: Path) -> bytes:
    return load_or_create_secret(keys_dir / "fingerprint.secret")
