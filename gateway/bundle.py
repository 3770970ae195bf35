"""Sealed license bundles (SPEC §2): the only form in which a license crosses a boundary.

A bundle is encrypted to one gateway's X25519 key and signed by one issuer's Ed25519 key.
Decoded, it is ``u16 len | header | u32 len | ciphertext | signature[64]`` where the header is
canonical JSON (sorted keys, no spaces, ASCII)::

    {"alg": ALG, "epk": <b64url 32>, "kid": <issuer id>, "nonce": <b64url 12>,
     "rid": <recipient id>, "v": 1}

Encryption: ephemeral X25519 with the recipient key -> HKDF-SHA256 (salt = ephemeral public key
|| recipient public key, domain-separated info) -> AES-256-GCM with the header bytes as AAD.
Signature: Ed25519 over the length-prefixed encoding of (domain, header, ciphertext).

Opening checks cheapest-first and decrypts only what a trusted issuer signed: strict parse ->
exact version and alg -> issuer id allow-listed, addressed to us -> signature -> decrypt. Every
failure raises the same :class:`BundleError` without a chained cause, so neither the message nor
a traceback tells a prober which check failed or leaks key material.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import struct
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = 1
ALG = "X25519-HKDF-SHA256-A256GCM+Ed25519"
BEGIN = "-----BEGIN PORTCULLIS LICENSE-----"
END = "-----END PORTCULLIS LICENSE-----"
MAX_TEXT_CHARS = 64 * 1024  # same as the default HTTP body cap: an import must fit one request
MAX_HEADER_BYTES = 512

_SIGN_DOMAIN = b"portcullis/license-bundle/v1/signature"
_KDF_INFO = b"portcullis/license-bundle/v1/aes-256-gcm-key"
_NONCE_BYTES = 12
_SIG_BYTES = 64
_TAG_BYTES = 16
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_HEADER_FIELDS = frozenset({"v", "alg", "kid", "rid", "epk", "nonce"})
# Everything a malformed bundle can raise on its way through parsing and the primitives.
# (binascii.Error and UnicodeError are ValueErrors; struct.error is not.)
_REJECT = (ValueError, TypeError, struct.error, InvalidSignature, InvalidTag)

PublicKey = Ed25519PublicKey | X25519PublicKey


class BundleError(Exception):
    """The bundle is not valid for this gateway; deliberately says nothing more."""

    def __init__(self) -> None:
        super().__init__("invalid license bundle")


# -- key ids and public key text --------------------------------------------------------------

def key_id(public_key: PublicKey) -> str:
    """First 16 hex chars of SHA-256 of the raw public key: short enough to read, 64 bits wide."""
    return hashlib.sha256(public_key.public_bytes_raw()).hexdigest()[:16]


def public_key_text(public_key: PublicKey) -> str:
    """``x25519:<base64url>`` or ``ed25519:<base64url>``, the form exchanged between gateways."""
    kind = "ed25519" if isinstance(public_key, Ed25519PublicKey) else "x25519"
    return f"{kind}:{_b64url(public_key.public_bytes_raw())}"


def parse_public_key(text: str, kind: Literal["x25519", "ed25519"]) -> PublicKey:
    """Inverse of :func:`public_key_text`; ``ValueError`` names the expected form on bad input."""
    prefix, _, encoded = text.strip().partition(":")
    try:
        if prefix != kind:
            raise ValueError
        raw = _unb64url(encoded, 32)
    except ValueError:
        raise ValueError(f"not an {kind} public key (expected {kind}:<base64url of 32 bytes>)") from None
    return Ed25519PublicKey.from_public_bytes(raw) if kind == "ed25519" else X25519PublicKey.from_public_bytes(raw)


# -- seal ------------------------------------------------------------------------------------

def seal(payload: dict[str, Any], *, issuer: Ed25519PrivateKey, issuer_key_id: str,
         recipient: X25519PublicKey, recipient_key_id: str) -> str:
    """Encrypt ``payload`` (a JSON object) to ``recipient`` and sign it as ``issuer``."""
    if issuer_key_id != key_id(issuer.public_key()) or recipient_key_id != key_id(recipient):
        raise ValueError("key id does not match its key")
    plaintext = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           allow_nan=False).encode()
    ephemeral = X25519PrivateKey.generate()
    epk = ephemeral.public_key().public_bytes_raw()
    nonce = os.urandom(_NONCE_BYTES)
    header = _canonical({"v": VERSION, "alg": ALG, "kid": issuer_key_id, "rid": recipient_key_id,
                         "epk": _b64url(epk), "nonce": _b64url(nonce)})
    key = _content_key(ephemeral.exchange(recipient), epk, recipient.public_bytes_raw())
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, header)
    signature = issuer.sign(_signed_message(header, ciphertext))
    return _armor(_pack(header, ciphertext, signature))


# -- open ------------------------------------------------------------------------------------

def open_bundle(text: str, *, recipient: X25519PrivateKey,
                trusted_issuers: Mapping[str, Ed25519PublicKey]) -> dict[str, Any]:
    """Verify and decrypt ``text``; ``trusted_issuers`` maps :func:`key_id` -> issuer key."""
    return _checked(text, recipient, trusted_issuers)[2]


def _checked(text: str, recipient: X25519PrivateKey,
             trusted_issuers: Mapping[str, Ed25519PublicKey]) -> tuple[str, bytes, dict[str, Any]]:
    """``(issuer key id, payload JSON, payload)`` of a valid bundle; any failure is BundleError."""
    try:
        return _open(text, recipient, trusted_issuers)
    except _REJECT:
        pass
    # Raised outside the handler so the exception carries no context from the failed check.
    raise BundleError()


def _open(text: str, recipient: X25519PrivateKey,
          trusted_issuers: Mapping[str, Ed25519PublicKey]) -> tuple[str, bytes, dict[str, Any]]:
    header_bytes, ciphertext, signature = _unpack(_unarmor(text))
    header = _parse_header(header_bytes)
    if header["v"] != VERSION or header["alg"] != ALG:
        raise ValueError
    issuer = trusted_issuers.get(header["kid"])
    recipient_public = recipient.public_key()
    if issuer is None or header["rid"] != key_id(recipient_public):
        raise ValueError
    issuer.verify(signature, _signed_message(header_bytes, ciphertext))
    epk = _unb64url(header["epk"], 32)
    shared = recipient.exchange(X25519PublicKey.from_public_bytes(epk))
    key = _content_key(shared, epk, recipient_public.public_bytes_raw())
    plaintext = AESGCM(key).decrypt(_unb64url(header["nonce"], _NONCE_BYTES), ciphertext, header_bytes)
    return header["kid"], plaintext, _parse_payload(plaintext)


def _parse_header(header_bytes: bytes) -> dict[str, Any]:
    """Exact field set, exact types, exact lengths, and the bytes must be the canonical form."""
    header = json.loads(header_bytes.decode("ascii"))
    if not isinstance(header, dict) or header.keys() != _HEADER_FIELDS:
        raise ValueError
    if type(header["v"]) is not int or not isinstance(header["alg"], str):
        raise ValueError
    for name in ("kid", "rid"):
        if not isinstance(header[name], str) or not _KEY_ID.fullmatch(header[name]):
            raise ValueError
    _unb64url(header["epk"], 32)
    _unb64url(header["nonce"], _NONCE_BYTES)
    if _canonical(header) != header_bytes:  # also rules out duplicate keys and whitespace games
        raise ValueError
    return header


def _parse_payload(plaintext: bytes) -> dict[str, Any]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in pairs}) != len(pairs):
            raise ValueError
        return dict(pairs)

    def no_constants(name: str) -> Any:
        raise ValueError

    payload = json.loads(plaintext.decode("utf-8"), object_pairs_hook=no_duplicates,
                         parse_constant=no_constants)
    if not isinstance(payload, dict):
        raise ValueError
    return payload


# -- verified-bundle cache -------------------------------------------------------------------

class VerifiedBundles:
    """Opened bundles keyed by SHA-256 of their text, so a repeated import never verifies twice.

    Ed25519 verification costs ~150 µs and must not run per request (SPEC §10). A hit is served
    only while the issuer that signed it is still trusted under the same key and the recipient
    key is unchanged, so shrinking the trust list or rotating keys takes effect at once. Each
    hit returns a fresh dict, so callers may mutate what they get. Thread-safe.
    """

    def __init__(self, maxsize: int = 1024) -> None:
        self._maxsize = maxsize
        self._entries: OrderedDict[bytes, tuple[str, bytes, bytes, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def open(self, text: str, *, recipient: X25519PrivateKey,
             trusted_issuers: Mapping[str, Ed25519PublicKey]) -> dict[str, Any]:
        if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
            raise BundleError()
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
        recipient_raw = recipient.public_key().public_bytes_raw()
        with self._lock:
            entry = self._entries.get(digest)
            if entry is not None:
                self._entries.move_to_end(digest)
        if entry is not None:
            kid, issuer_raw, entry_recipient, plaintext = entry
            issuer = trusted_issuers.get(kid)
            if issuer is not None and issuer.public_bytes_raw() == issuer_raw and entry_recipient == recipient_raw:
                return json.loads(plaintext)
        kid, plaintext, payload = _checked(text, recipient, trusted_issuers)
        with self._lock:
            self._entries[digest] = (kid, trusted_issuers[kid].public_bytes_raw(), recipient_raw, plaintext)
            self._entries.move_to_end(digest)
            while len(self._entries) > self._maxsize:
                self._entries.popitem(last=False)
        return payload


# -- framing and encodings (pure, shared by seal and open) ------------------------------------

def _content_key(shared: bytes, epk: bytes, recipient_public: bytes) -> bytes:
    """The AES key, bound to both public keys so a key is never reused across recipients."""
    return HKDF(hashes.SHA256(), 32, salt=epk + recipient_public, info=_KDF_INFO).derive(shared)


def _signed_message(header: bytes, ciphertext: bytes) -> bytes:
    return b"".join(struct.pack(">Q", len(part)) + part for part in (_SIGN_DOMAIN, header, ciphertext))


def _canonical(header: Mapping[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _pack(header: bytes, ciphertext: bytes, signature: bytes) -> bytes:
    return struct.pack(">H", len(header)) + header + struct.pack(">I", len(ciphertext)) + ciphertext + signature


def _unpack(data: bytes) -> tuple[bytes, bytes, bytes]:
    (header_len,) = struct.unpack_from(">H", data, 0)
    if header_len > MAX_HEADER_BYTES:
        raise ValueError
    header = data[2:2 + header_len]
    (ct_len,) = struct.unpack_from(">I", data, 2 + header_len)
    start = 6 + header_len
    if ct_len < _TAG_BYTES or len(data) != start + ct_len + _SIG_BYTES:
        raise ValueError
    return header, data[start:start + ct_len], data[start + ct_len:]


def _armor(data: bytes) -> str:
    body = base64.b64encode(data).decode("ascii")
    return "\n".join([BEGIN, *(body[i:i + 64] for i in range(0, len(body), 64)), END]) + "\n"


def _unarmor(text: str) -> bytes:
    """Armor lines must be exact; the body may be wrapped anyhow but must be canonical base64."""
    if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
        raise ValueError
    lines = [line.strip() for line in text.strip().splitlines()]
    if len(lines) < 3 or lines[0] != BEGIN or lines[-1] != END:
        raise ValueError
    body = "".join(lines[1:-1]).encode("ascii")
    data = base64.b64decode(body, validate=True)
    if base64.b64encode(data) != body:
        raise ValueError
    return data


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64url(text: str, size: int) -> bytes:
    """Strict unpadded base64url of exactly ``size`` bytes (one encoding per value)."""
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if len(raw) != size or _b64url(raw) != text:
        raise ValueError
    return raw
