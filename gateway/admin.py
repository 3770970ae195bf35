"""Admin operations shared by the CLI and the admin API: issue, import, change status, publish.

Every change to the registry ends with :func:`publish_snapshots`, so analytics (which reads the
Parquet snapshots, never the live database) sees the registry as it is.
"""
from __future__ import annotations

import json
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway import bundle, keyfiles
from gateway.callers import open_callers
from gateway.config import Settings
from gateway.keyfiles import fingerprint_secret
from gateway.licenses import from_us, key_fingerprint, key_hash, license_from_dict, license_to_dict, \
    new_license_id, new_license_key, parse_time, to_us
from gateway.policy import load_policy
from gateway.registry import Store
from gateway.snapshot import write_callers_snapshot, write_licenses_snapshot
from gateway.types import License, Policy, Quota, Status

_VERIFIED = bundle.VerifiedBundles()
SEALED_AT = "sealed_at"  # in a bundle's payload, beside the license's own fields


class AdminError(ValueError):
    """An admin operation is refused; the message is one line, safe to show."""


@dataclass(frozen=True)
class Issued:
    license: License
    key: str  # shown once, never stored


def issue(store: Store, policy: Policy, *, customer: str, tier: str, product: str,
          expires_at: datetime | None = None, starts_at: datetime | None = None, seats: int | None = None,
          features: Iterable[str] = (), environments: Iterable[str] = ("*",),
          quotas: dict[str, Quota] | None = None, metadata: dict[str, str] | None = None) -> Issued:
    if tier not in policy.tiers:
        raise AdminError(f"unknown tier {tier!r}; the policy has: {', '.join(sorted(policy.tiers))}")
    if seats is not None and seats < 1:
        raise AdminError("seats must be at least 1")
    if expires_at is not None and starts_at is not None and expires_at <= starts_at:
        raise AdminError("expires must be after starts")
    key = new_license_key()
    lic = License(license_id=new_license_id(), key_hash=key_hash(key), customer=customer, product=product,
                  tier=tier, features=tuple(features), seats=seats, quotas=quotas or {}, starts_at=starts_at,
                  expires_at=expires_at, environments=tuple(environments) or ("*",), metadata=metadata or {})
    store.put([lic])
    return Issued(lic, key)


def set_status(store: Store, license_id: str, status: Status) -> License:
    lic = store.set_status(license_id, status)
    if lic is None:
        raise AdminError(f"no license {license_id!r}")
    return lic


# -- sealed bundles ---------------------------------------------------------------------------

def trusted_issuers(settings: Settings) -> dict[str, Ed25519PublicKey]:
    """This gateway's own issuer key plus the issuers listed in ``keys/trusted_issuers.json``."""
    own = keyfiles.issuer_key(settings.keys_dir).public_key()
    trusted = {bundle.key_id(own): own}
    path = settings.keys_dir / "trusted_issuers.json"
    if path.exists():
        for text in json.loads(path.read_text()):
            pub = bundle.parse_public_key(text, "ed25519")
            trusted[bundle.key_id(pub)] = pub
    return trusted


def trust_issuer(settings: Settings, public_key: str) -> str:
    try:
        pub = bundle.parse_public_key(public_key, "ed25519")
    except ValueError as exc:
        raise AdminError(str(exc)) from None
    path = settings.keys_dir / "trusted_issuers.json"
    listed = json.loads(path.read_text()) if path.exists() else []
    text = bundle.public_key_text(pub)
    if text not in listed:
        keyfiles.write_private(path, json.dumps(listed + [text], indent=1).encode())
    return bundle.key_id(pub)


def seal_license(settings: Settings, store: Store, license_id: str, recipient: str | None = None) -> str:
    """A sealed bundle of a license as this registry holds it, for this gateway or for the
    gateway whose X25519 key is given.

    The payload carries the moment it was sealed (``sealed_at``, to the microsecond): recipients
    apply the bundles of one license in that order and refuse to go back
    (:func:`gateway.registry.admit_bundle`). The store picks the moment, never earlier than the
    license's last change here, so the bundle cannot undo a later change here either.
    """
    issuer = keyfiles.issuer_key(settings.keys_dir)
    try:
        to = (bundle.parse_public_key(recipient, "x25519") if recipient
              else keyfiles.recipient_key(settings.keys_dir).public_key())
    except ValueError as exc:
        raise AdminError(str(exc)) from None
    stamped = store.seal_stamp(license_id, to_us(datetime.now(timezone.utc)))
    if stamped is None:
        raise AdminError(f"no license {license_id!r}")
    lic, sealed_us = stamped
    payload = license_to_dict(lic) | {SEALED_AT: from_us(sealed_us).isoformat(timespec="microseconds")}
    return bundle.seal(payload, issuer=issuer, issuer_key_id=bundle.key_id(issuer.public_key()),
                       recipient=to, recipient_key_id=bundle.key_id(to))


def import_bundle(settings: Settings, store: Store, text: str) -> tuple[License, bool]:
    """Open, verify and store a sealed bundle; returns the license and whether anything changed.

    Raises :class:`AdminError` (one generic message) for anything but a genuine bundle for this
    gateway, and :class:`gateway.registry.LicenseConflict` for a genuine one that would roll its
    license back or bring a revoked one back (see :func:`gateway.registry.admit_bundle`). A
    bundle sealed before bundles carried ``sealed_at`` counts as the oldest possible.
    """
    recipient = keyfiles.recipient_key(settings.keys_dir)
    try:
        payload = _VERIFIED.open(text, recipient=recipient, trusted_issuers=trusted_issuers(settings))
        sealed_at = parse_time(payload.get(SEALED_AT), SEALED_AT)
        lic = license_from_dict({name: value for name, value in payload.items() if name != SEALED_AT})
    except (bundle.BundleError, ValueError):
        raise AdminError("invalid license bundle") from None
    return lic, store.put_sealed(lic, to_us(sealed_at) if sealed_at else 0)


# -- analytics snapshots -------------------------------------------------------------------------

def publish_snapshots(settings: Settings, store: Store, policy: Policy | None = None) -> None:
    policy = policy or load_policy(settings.policy_path)
    secret = fingerprint_secret(settings.keys_dir)
    stamps = store.timestamps()
    _, licenses = store.licenses_since(0)
    write_licenses_snapshot(settings.data_dir, (_license_row(lic, policy, secret, stamps) for lic in licenses))
    with closing(open_callers(settings)) as callers:
        directory = callers.load()
    write_callers_snapshot(settings.data_dir, (c.to_toml() | {"caller_id": c.caller_id}
                                               for c in directory.callers.values()))


def _license_row(lic: License, policy: Policy, secret: bytes, stamps) -> dict:
    tier = policy.tiers.get(lic.tier)
    created, updated = stamps[lic.license_id]
    return {
        "license_id": lic.license_id, "key_fp": key_fingerprint(secret, lic.key_hash), "customer": lic.customer,
        "product": lic.product, "tier": lic.tier, "status": lic.status.value, "features": list(lic.features),
        "seats_limit": lic.seats if lic.seats is not None else (tier.seats if tier else None),
        "environments": list(lic.environments), "starts_at": lic.starts_at, "expires_at": lic.expires_at,
        "created_at": created, "updated_at": updated, "metadata": json.dumps(dict(lic.metadata)),
    }
