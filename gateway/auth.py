"""Caller authentication: HMAC request signing (SPEC §3) and mTLS identities.

Verification order keeps refusals cheap and the replay cache unpoisonable: header shape and
timestamp first, then the key id, then the constant-time signature compare, and only a request
with a valid signature may record its nonce. Recording it is awaited: a replay window shared by
several hosts lives across the network, and the event loop must not wait for it.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections import deque
from typing import Mapping, NamedTuple, Protocol

from gateway.callers import Caller, CallerDirectory

_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")


class Identity(NamedTuple):
    """Who is calling: a caller, or the reason authentication failed (``auth_error`` of SPEC §5).

    A NamedTuple, built on every request: cheaper than a frozen dataclass, equally immutable."""

    caller: Caller | None
    method: str  # hmac | mtls | none
    error: str | None = None


def canonical_request(method: str, path_qs: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    body_hash = hashlib.sha256(body).hexdigest()
    return f"{method.upper()}\n{path_qs}\n{timestamp}\n{nonce}\n{body_hash}".encode("utf-8")


def sign(secret: str | bytes, method: str, path_qs: str, timestamp: str, nonce: str, body: bytes) -> str:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    # hmac.digest is OpenSSL's one-shot HMAC: the same bytes as hmac.new(...), without building
    # an HMAC object per request.
    return hmac.digest(key, canonical_request(method, path_qs, timestamp, nonce, body), "sha256").hex()


def signed_headers(key_id: str, secret: str, method: str, path_qs: str, body: bytes, now: float) -> dict[str, str]:
    """Headers a client sends (used by the SDK, ``portcullis call`` and the benchmarks)."""
    timestamp, nonce = str(int(now)), secrets.token_urlsafe(18)
    return {"X-Port-Key-Id": key_id, "X-Port-Timestamp": timestamp, "X-Port-Nonce": nonce,
            "X-Port-Signature": sign(secret, method, path_qs, timestamp, nonce, body)}


class NonceCache:
    """Nonces seen within the timestamp window, forgotten a second at a time once no request
    carrying them could pass the timestamp check any more.

    A nonce is kept as its 64-bit ``hash()`` (SipHash under this process's random key, so a
    caller cannot aim for a collision), filed under the second it expires: about 86 bytes an
    entry (``tests/test_nonces.py`` holds it under 100), where the nonce strings themselves in a
    set and an (expiry, nonce) queue took about 200. The price is that two different nonces with
    the same 64-bit hash within one window count as a replay: with three million nonces in a
    window, about one chance in four million that any such pair exists.
    """

    def __init__(self, window_s: int) -> None:
        self._window = window_s
        self._seen: set[int] = set()
        self._expiring: deque[tuple[int, list[int]]] = deque()  # (second it expires, hashes), oldest first

    async def record(self, nonce: str, now: float) -> bool:
        return self.add(nonce, now)

    def add(self, nonce: str, now: float) -> bool:
        """Record a nonce; False if it was already seen within the window."""
        expiring, seen = self._expiring, self._seen
        while expiring and expiring[0][0] <= now:
            seen.difference_update(expiring.popleft()[1])
        digest = hash(nonce)
        if digest in seen:
            return False
        # Kept until the latest moment a request carrying it could still pass the timestamp check.
        self._keep(digest, int(now) + 2 * self._window + 1)
        return True

    def restore(self, nonce: str, expires: int) -> None:
        """Remember a nonce an earlier run accepted, until the second ``expires`` (restore them
        oldest first: one that expires sooner than one restored before it is kept as long)."""
        self._keep(hash(nonce), expires)

    def _keep(self, digest: int, second: int) -> None:
        self._seen.add(digest)
        expiring = self._expiring
        if expiring and expiring[-1][0] == second:
            expiring[-1][1].append(digest)
        else:
            expiring.append((second, [digest]))

    def __len__(self) -> int:
        return len(self._seen)


class Nonces(Protocol):
    async def record(self, nonce: str, now: float) -> bool:
        """Record a nonce; False if it was already seen within the window. A store on this
        host answers without suspending; one across the network is a round trip."""


class HmacAuthenticator:
    def __init__(self, directory: CallerDirectory, skew_s: int, nonces: Nonces | None = None) -> None:
        self.directory = directory
        self.skew_s = skew_s
        self.nonces = nonces if nonces is not None else NonceCache(skew_s)

    async def authenticate(self, method: str, path_qs: str, headers: Mapping[str, str], body: bytes,
                           now: float) -> Identity:
        """Who signed this request; a replayed nonce is refused only once the signature holds."""
        identity = self.verify(method, path_qs, headers, body, now)
        if identity.caller is not None and not await self.nonces.record(headers["X-Port-Nonce"], now):
            return Identity(None, "hmac", "replayed_nonce")
        return identity

    def verify(self, method: str, path_qs: str, headers: Mapping[str, str], body: bytes, now: float) -> Identity:
        """Every check but the nonce's: the caller whose key signed exactly this request, or why not."""
        key_id = headers.get("X-Port-Key-Id")
        timestamp = headers.get("X-Port-Timestamp")
        nonce = headers.get("X-Port-Nonce")
        signature = headers.get("X-Port-Signature")
        if not (key_id and timestamp and nonce and signature):
            return Identity(None, "none", "missing_credentials")
        # isascii: str.isdigit() also accepts "²" (which int() refuses) and other scripts' digits.
        if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12 \
                or abs(int(timestamp) - now) > self.skew_s:
            return Identity(None, "hmac", "stale_timestamp")
        caller = self.directory.by_key_id.get(key_id)
        secret = self.directory.secrets.get(key_id)
        if caller is None or secret is None:
            return Identity(None, "hmac", "unknown_key_id")
        # Any 64 ASCII characters may be compared: a non-hex one simply does not match.
        if not _NONCE.fullmatch(nonce) or len(signature) != 64 or not signature.isascii():
            return Identity(None, "hmac", "bad_signature")
        expected = sign(secret, method, path_qs, timestamp, nonce, body)
        if not hmac.compare_digest(expected, signature):
            return Identity(None, "hmac", "bad_signature")
        return Identity(caller, "hmac")

    def authenticate_mtls(self, identity: str | None) -> Identity:
        """Map a verified client certificate's identity to a caller."""
        if identity is None:
            return Identity(None, "mtls", "bad_client_cert")
        caller = self.directory.by_identity.get(identity)
        return Identity(caller, "mtls", None if caller else "bad_client_cert")
