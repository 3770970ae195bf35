"""Secrets at rest in the shared registry, sealed: AES-256-GCM under ``keys/registry_seal.key``.

Callers' HMAC secrets must be in the database every host reads (SPEC §11), but a dump, a backup
or a replica of it must not hand them out: the database holds each secret sealed under a key that
lives only in ``keys/`` (created by ``portcullis init``, 0600, copied to every host like the other
keys). The associated data binds a sealed secret to its caller and key id, so a row copied onto
another caller or key id does not open: whoever can write the database but lacks the key cannot
give one caller another's secret.

A sealed secret is ``version (1) | key id (8) | nonce (12) | ciphertext and tag``. The key id
(a digest of the key, not the key) tells a host holding another key file from a tampered row.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.keyfiles import load_or_create_secret

KEY_FILE = "registry_seal.key"
_VERSION = b"\x01"
_KID, _NONCE = 8, 12
_HEADER = len(_VERSION) + _KID + _NONCE


class SealError(ValueError):
    """A secret cannot be sealed or opened; the message names what and why, never a secret."""


def key_path(keys_dir: Path) -> Path:
    return keys_dir / KEY_FILE


def create_key(keys_dir: Path) -> None:
    """Create the seal key if there is none (``portcullis init``); never replaces one."""
    load_or_create_secret(key_path(keys_dir))


class Seal:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise SealError("the registry seal key must be 256 bits")
        self._aead = AESGCM(key)
        self.key_id = hmac.new(key, b"portcullis registry seal key id", hashlib.sha256).digest()[:_KID]

    @classmethod
    def from_keys(cls, keys_dir: Path) -> Seal:
        """The seal key of ``keys/``; a missing or malformed file is a SealError (never created
        here: a host that made its own would seal secrets no other host can open)."""
        path = key_path(keys_dir)
        try:
            text = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            raise SealError(f"{path} is missing: `portcullis init` makes it, once; every host needs "
                            f"the same copy of keys/") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SealError(f"{path} cannot be read: {getattr(exc, 'strerror', None) or 'not text'}") from None
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise SealError(f"{path} is not a 256-bit key (64 hex digits)")
        return cls(key)

    def seal(self, secret: bytes, caller_id: str, key_id: str) -> bytes:
        nonce = os.urandom(_NONCE)
        return _VERSION + self.key_id + nonce + self._aead.encrypt(nonce, secret, _bound(caller_id, key_id))

    def open(self, sealed: bytes, caller_id: str, key_id: str) -> bytes:
        what = f"the secret of caller {caller_id!r} key {key_id!r}"
        if len(sealed) <= _HEADER or sealed[:1] != _VERSION:
            raise SealError(f"{what} is not a sealed secret")
        if sealed[1:1 + _KID] != self.key_id:
            raise SealError(f"{what} was sealed under another registry seal key "
                            f"({sealed[1:1 + _KID].hex()}, keys/{KEY_FILE} is {self.key_id.hex()}): "
                            f"every host needs the same keys/")
        try:
            return self._aead.decrypt(sealed[1 + _KID:_HEADER], sealed[_HEADER:], _bound(caller_id, key_id))
        except InvalidTag:
            raise SealError(f"{what} does not open: it was altered, or moved from another caller or key") from None


def _bound(caller_id: str, key_id: str) -> bytes:
    """The associated data: what a sealed secret belongs to, unambiguously encoded."""
    return json.dumps(["portcullis caller secret", caller_id, key_id]).encode()
