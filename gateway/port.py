"""The port without its transport: registry index, policy and callers around the pure engine.

The HTTP adapter and the embedded :class:`gateway.Enforcer` both decide through a ``Port``, so
a service that mounts the port as a module gets exactly the rules the gateway applies.
"""
from __future__ import annotations

from datetime import datetime

from gateway.callers import Caller, CallerDirectory, load_directory
from gateway.checks import CheckBody
from gateway.config import Settings
from gateway.engine import authorize_caller, decide, metering
from gateway.exchange import Exchange
from gateway.keyfiles import fingerprint_secret
from gateway.licenses import key_fingerprint, key_hash
from gateway.policy import load_policy
from gateway.registry import LicenseIndex, Store
from gateway.registry.sqlite import SqliteStore
from gateway.types import Check, License, Policy, Reason, Usage

_FP_CACHE_MAX = 200_000
_NO_USAGE = Usage()


class Port:
    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store: Store = store or SqliteStore(settings.db_path)
        self.index = LicenseIndex(self.store)
        self.policy: Policy = load_policy(settings.policy_path)
        self.directory: CallerDirectory = load_directory(settings.callers_path, settings.keys_dir)
        self._fp_secret = fingerprint_secret(settings.keys_dir)
        self._fingerprints: dict[str, str] = {}

    # -- hot path -------------------------------------------------------------------------
    def fingerprint(self, hashed_key: str) -> str:
        fp = self._fingerprints.get(hashed_key)
        if fp is None:
            if len(self._fingerprints) >= _FP_CACHE_MAX:
                self._fingerprints.clear()
            fp = self._fingerprints[hashed_key] = key_fingerprint(self._fp_secret, hashed_key)
        return fp

    def lookup(self, ex: Exchange, body: CheckBody) -> License | None:
        """Find the license a key names; records the key's fingerprint (never the key)."""
        hashed = key_hash(body.license_key)
        ex.key_fp = self.fingerprint(hashed)
        return self.index.by_hash.get(hashed)

    def check_of(self, body: CheckBody, lic: License | None) -> Check:
        return Check(feature=body.feature, environment=body.environment or self.settings.environment,
                     user_id=body.user_id, product=body.product or (lic.product if lic else None),
                     quantity=body.quantity)

    def authorize(self, ex: Exchange, caller: Caller, check: Check) -> bool:
        """Caller scope (SPEC §3): refuses with 403 when it does not cover the check."""
        why = authorize_caller(caller.products, caller.features, caller.environments, check)
        if why is not None:
            ex.refuse(Reason.CALLER_NOT_AUTHORIZED, why)
            return False
        return True

    def decide(self, ex: Exchange, lic: License | None, check: Check, now: datetime) -> Exchange:
        policy, ttl = self.policy, self.settings.cache_ttl_s
        if lic is None:
            return ex.decide(None, decide(None, policy, check, _NO_USAGE, now, ttl))
        meter = metering(lic, policy, check, now)
        decision = self.store.decide(lic, meter, check.user_id, now,
                                     lambda usage: decide(lic, policy, check, usage, now, ttl))
        return ex.decide(lic, decision)

    # -- state changes ---------------------------------------------------------------------
    def reload_policy(self) -> Policy:
        """Load policy.toml; on error the old policy stays in force and PolicyError is raised."""
        self.policy = load_policy(self.settings.policy_path)
        return self.policy

    def reload_callers(self) -> CallerDirectory:
        self.directory = load_directory(self.settings.callers_path, self.settings.keys_dir)
        return self.directory

    def refresh(self) -> int:
        return self.index.refresh()

    def close(self) -> None:
        self.store.close()
