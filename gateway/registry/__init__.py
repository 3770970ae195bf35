"""License registry: the store interface and the in-memory index the hot path reads.

A :class:`Store` persists licenses and usage counters and runs a decision atomically with the
usage it reads and changes (check-and-consume). SQLite is the default implementation; a
PostgreSQL store for several hosts implements the same protocol.
"""
from __future__ import annotations

from datetime import datetime
from typing import Callable, Iterable, Protocol

from gateway.types import Decision, License, Metering, Status, Usage


class Store(Protocol):
    def licenses_since(self, revision: int) -> tuple[int, list[License]]:
        """Licenses changed after ``revision`` (0: all) and the store's current revision."""

    def put(self, licenses: Iterable[License]) -> int:
        """Insert or replace licenses by id; returns how many actually changed."""

    def set_status(self, license_id: str, status: Status) -> License | None: ...

    def get(self, license_id: str) -> License | None: ...

    def decide(self, lic: License, meter: Metering, user_id: str | None, now: datetime,
               decide: Callable[[Usage], Decision]) -> Decision:
        """Read the usage ``meter`` names, call ``decide`` and apply its effects in one transaction."""

    def timestamps(self) -> dict[str, tuple[datetime, datetime]]:
        """license id -> (created, last changed)."""

    def seats_in_use(self, license_id: str, now: datetime, ttl_days: int) -> int: ...

    def close(self) -> None: ...


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
