"""License registry: the store interface and the in-memory index the hot path reads.

A :class:`Store` persists licenses and usage counters and runs a decision atomically with the
usage it reads and changes (check-and-consume). SQLite is the default implementation; a
PostgreSQL store for several hosts implements the same protocol.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable, Iterable, Protocol

from gateway.licenses import iso, license_to_dict
from gateway.types import Decision, License, Metering, Status, Usage


class StaleBundle(Exception):
    """A genuine, verified bundle that would take its license back to an older state."""


class Store(Protocol):
    def licenses_since(self, revision: int) -> tuple[int, list[License]]:
        """Licenses changed after ``revision`` (0: all) and the store's current revision."""

    def put(self, licenses: Iterable[License]) -> int:
        """Insert or replace licenses by id; returns how many actually changed."""

    def put_sealed(self, lic: License, sealed_us: int) -> bool:
        """Store a license from a bundle sealed at ``sealed_us`` (µs since the epoch; 0 if the
        bundle does not say) if :func:`admit_bundle` lets it in, in one transaction with the
        check; returns whether anything changed, raises :class:`StaleBundle`."""

    def set_status(self, license_id: str, status: Status) -> License | None: ...

    def get(self, license_id: str) -> License | None: ...

    def decide(self, lic: License, meter: Metering, user_id: str | None, now: datetime,
               decide: Callable[[Usage], Decision]) -> Decision:
        """Read the usage ``meter`` names, call ``decide`` and apply its effects in one transaction."""

    def timestamps(self) -> dict[str, tuple[datetime, datetime]]:
        """license id -> (created, last changed)."""

    def seats_in_use(self, license_id: str, now: datetime, ttl_days: int) -> int: ...

    def close(self) -> None: ...


def admit_bundle(current: License | None, applied_us: int | None, incoming: License, sealed_us: int) -> bool:
    """Whether importing ``incoming``, from a bundle sealed at ``sealed_us``, changes the license
    stored here (``current``); raises :class:`StaleBundle` where it would roll it back.

    The bundles of one license apply in the order they were sealed. ``applied_us`` is when the
    newest bundle this registry holds the state of was sealed (imported here, or sealed here): an
    older bundle is refused, and so is that same one once the license has changed here since, so
    importing it again cannot undo a revocation or suspension made here. A newer bundle wins:
    the issuer's latest word is the license. Importing what is already stored changes nothing and
    is never refused.
    """
    if current is None:
        return True
    if license_to_dict(incoming) == license_to_dict(current):
        return False
    if applied_us is not None and sealed_us <= applied_us:
        raise StaleBundle(f"this bundle of license {current.license_id} is not newer than the license here "
                          f"(sealed {_iso_us(sealed_us)}; the license here is from a bundle sealed "
                          f"{_iso_us(applied_us)} or changed since): ask the issuer for a fresh bundle")
    return True


def _iso_us(us: int) -> str:
    return iso(datetime.fromtimestamp(us / 1_000_000, timezone.utc)) if us else "at an unknown time"


class LicenseIndex:
    """Licenses by key hash and by id, refreshed from the store's revision counter.

    The hot path never touches the store to find a license; other processes' changes (CLI,
    other workers) arrive on the next :meth:`refresh`.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self.revision = 0
        self.by_hash: dict[str, License] = {}
        self.by_id: dict[str, License] = {}
        self.refresh()

    def refresh(self) -> int:
        """Pull changes from the store; returns how many licenses changed."""
        self.revision, changed = self._store.licenses_since(self.revision)
        for lic in changed:
            old = self.by_id.get(lic.license_id)
            if old is not None and old.key_hash != lic.key_hash:
                self.by_hash.pop(old.key_hash, None)
            self.by_id[lic.license_id] = lic
            self.by_hash[lic.key_hash] = lic
        return len(changed)

    def __len__(self) -> int:
        return len(self.by_id)
