"""License identity and serialisation: ids, secret keys, key hashes and fingerprints.

A key is shown once when issued; everything after that works with ``key_hash`` (SHA-256, safe
because keys carry 125 bits of entropy) and ``key_fp`` (a keyed HMAC of the hash, so a leaked
audit trail cannot be matched against keys).
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timezone
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Mapping

from gateway.policy import parse_quotas
from gateway.types import License, Status

_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_REQUIRED = frozenset({"license_id", "key_hash", "customer", "product", "tier"})
_KNOWN = _REQUIRED | {"status", "features", "seats", "quotas", "starts_at", "expires_at", "environments", "metadata"}
_STATUSES = {s.value: s for s in Status}
# Shared empty mappings: most licenses override nothing, and 100,000 empty dicts cost megabytes.
_NO_QUOTAS: Mapping[str, Any] = MappingProxyType({})
_NO_METADATA: Mapping[str, str] = MappingProxyType({})


def _b32(nchars: int) -> str:
    return "".join(secrets.choice(_B32) for _ in range(nchars))


def new_license_key() -> str:
    """``LK-XXXXX-XXXXX-XXXXX-XXXXX-XXXXX``: 25 base32 characters, 125 bits of entropy."""
    return "LK-" + "-".join(_b32(5) for _ in range(5))


def new_license_id() -> str:
    return "lic_" + _b32(20).lower()


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_fingerprint(fp_secret: bytes, hashed_key: str) -> str:
    return hmac.new(fp_secret, hashed_key.encode("ascii"), hashlib.sha256).hexdigest()[:16]


def to_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch: how the registry and the audit trail store moments."""
    return int(moment.timestamp() * 1_000_000)


def from_us(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, timezone.utc)


@lru_cache(maxsize=8192)  # ~1.6 MB at most
def iso(moment: datetime | None) -> str | None:
    """``2027-01-01T00:00:00Z``. Cached: answers show the same few expiry moments over and over."""
    return None if moment is None else moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None, field: str = "time") -> datetime | None:
    """ISO date or datetime → aware UTC datetime (a bare date means midnight UTC)."""
    if text in (None, ""):
        return None
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{field}: not an ISO date or datetime: {text!r}") from None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def license_to_dict(lic: License) -> dict[str, Any]:
    """JSON form used by the registry, sealed bundles and the admin API (never contains a key)."""
    return {
        "license_id": lic.license_id, "key_hash": lic.key_hash, "customer": lic.customer,
        "product": lic.product, "tier": lic.tier, "status": str(lic.status), "features": list(lic.features),
        "seats": lic.seats,
        "quotas": {k: {"limit": q.limit, "period": str(q.period)} for k, q in lic.quotas.items()},
        "starts_at": iso(lic.starts_at), "expires_at": iso(lic.expires_at),
        "environments": list(lic.environments), "metadata": dict(lic.metadata),
    }


def stored_license(doc: Mapping[str, Any]) -> License:
    """A license from a registry document, which :func:`license_from_dict` validated on its way
    in: no checks again, so 100,000 licenses load in well under a second at start-up."""
    quotas = doc["quotas"]
    return License(
        license_id=doc["license_id"], key_hash=doc["key_hash"], customer=doc["customer"], product=doc["product"],
        tier=doc["tier"], status=_STATUSES[doc["status"]], features=tuple(doc["features"]), seats=doc["seats"],
        quotas=parse_quotas("license: quotas", quotas) if quotas else _NO_QUOTAS,
        starts_at=_stored_time(doc["starts_at"]), expires_at=_stored_time(doc["expires_at"]),
        environments=tuple(doc["environments"]), metadata=doc["metadata"] or _NO_METADATA,
    )


def _stored_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def license_from_dict(doc: Mapping[str, Any]) -> License:
    """Strict inverse of :func:`license_to_dict`; raises ValueError naming the bad field."""
    keys = doc.keys()
    if not keys >= _REQUIRED:
        raise ValueError(f"license: missing field(s) {', '.join(sorted(_REQUIRED - keys))}")
    if not keys <= _KNOWN:
        raise ValueError(f"license: unknown field(s) {', '.join(sorted(keys - _KNOWN))}")
    kh = doc["key_hash"]
    if not isinstance(kh, str) or not _HEX64.fullmatch(kh):
        raise ValueError("license: key_hash must be 64 lowercase hex characters")
    for name in ("license_id", "customer", "product", "tier"):
        if not isinstance(doc[name], str) or not doc[name]:
            raise ValueError(f"license: {name} must be a non-empty string")
    seats = doc.get("seats")
    if seats is not None and (isinstance(seats, bool) or not isinstance(seats, int) or seats < 1):
        raise ValueError("license: seats must be a positive integer or null")
    status = _STATUSES.get(doc.get("status", "active"))
    if status is None:
        raise ValueError(f"license: status must be one of {', '.join(Status)}")
    return License(
        license_id=doc["license_id"], key_hash=kh, customer=doc["customer"], product=doc["product"],
        tier=doc["tier"], status=status, features=tuple(_strings(doc, "features", [])), seats=seats,
        quotas=parse_quotas("license: quotas", doc["quotas"]) if doc.get("quotas") else _NO_QUOTAS,
        starts_at=parse_time(doc.get("starts_at"), "starts_at"),
        expires_at=parse_time(doc.get("expires_at"), "expires_at"),
        environments=tuple(_strings(doc, "environments", ["*"])),
        metadata={str(k): str(v) for k, v in doc["metadata"].items()} if doc.get("metadata") else _NO_METADATA,
    )


def _strings(doc: Mapping[str, Any], name: str, default: list[str]) -> list[str]:
    value = doc.get(name, default)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"license: {name} must be a list of strings")
    return value
