"""License registry: the store interface and the in-memory index the hot path reads.

A :class:`Store` persists licenses and usage counters and runs decisions atomically with the
usage they read and change (check-and-consume). SQLite is the default implementation; a
PostgreSQL store for several hosts implements the same protocol.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Callable, Iterable, NamedTuple, Protocol, Sequence

from gateway.engine import status_refusal
from gateway.licenses import from_us, iso, license_to_dict
from gateway.types import Decision, License, Metering, Status, Usage

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.registry.nonces import SharedNonces
    from gateway.registry.signals import Signals


class RegistryUnavailable(Exception):
    """The shared registry cannot be reached (connection refused, lost, timed out): the caller
    answers 503 ``REGISTRY_UNAVAILABLE``. Whatever was under way either committed whole or not at
    all; it is never retried here, so no unit is counted twice. The message never holds a secret."""


class RegistryBusy(RegistryUnavailable):
    """The registry answered, but not in time (a license lock or a free connection waited for too
    long, a deadlock): this request is a 503 like any outage, but the registry is not marked
    unreachable, so one hot license under load cannot take a whole host out of rotation."""


class LicenseConflict(Exception):
    """A change the license's state forbids (HTTP 409); the message is one line, safe to show."""

    def __init__(self, message: str, license: License) -> None:
        super().__init__(message)
        self.license = license


class StaleBundle(LicenseConflict):
    """A genuine, verified bundle that would take its license back to an older state."""


class FinalRevocation(LicenseConflict):
    """A status change, or a bundle, that would bring a revoked license back."""


class Metered(NamedTuple):
    """One check whose decision may read or change usage: the license, which counters the check
    names (:func:`gateway.engine.metering`), the user, the moment, and the engine's verdict as a
    function of the usage read."""

    lic: License
    meter: Metering
    user_id: str | None
    now: datetime
    decide: Callable[[Usage], Decision]


def license_doc(lic: License) -> str:
    """A license as the registry stores it: its JSON document, keys sorted, so that an unchanged
    license compares equal and is not rewritten."""
    return json.dumps(license_to_dict(lic), sort_keys=True)


def check_status(current: License, status: Status) -> None:
    """Raise :class:`FinalRevocation` where the engine's rule forbids ``current`` taking ``status``."""
    why = status_refusal(current, status)
    if why is not None:
        raise FinalRevocation(why, current)


class Store(Protocol):
    def licenses_since(self, revision: int) -> tuple[int, list[License]]:
        """Licenses changed after ``revision`` (0: all) and the store's current revision."""

    def put(self, licenses: Iterable[License]) -> int:
        """Insert or replace licenses by id (a change made here, dated now: see
        :func:`admit_bundle`); returns how many actually changed."""

    def put_sealed(self, lic: License, sealed_us: int) -> bool:
        """Store a license from a bundle sealed at ``sealed_us`` (µs since the epoch; 0 if the
        bundle does not say) if :func:`admit_bundle` lets it in, in one transaction with the
        check; returns whether anything changed, raises :class:`StaleBundle`."""

    def seal_stamp(self, license_id: str, now_us: int) -> tuple[License, int] | None:
        """The license as stored and the moment to seal a bundle of it at: ``now_us``, or just
        after the moment its state dates from if this clock is behind that. Recorded, so the
        bundle cannot undo a later change here either, and seals of a license only move forward."""

    def set_status(self, license_id: str, status: Status) -> License | None:
        """Change a license's status in one transaction with :func:`check_status` (raises
        :class:`FinalRevocation`); None when there is no such license."""

    def get(self, license_id: str) -> License | None: ...

    async def decide_many(self, checks: Sequence[Metered]) -> list[Decision]:
        """Read the usage each check names, decide, apply the effects; one transaction for the
        lot, in order, each check seeing the effects of the ones before it.

        Awaitable so that a store across the network never blocks the event loop, and so that
        the checks of a batch (or of one event-loop turn) cost one round trip; a store on local
        disk answers without suspending. If anything fails, nothing is applied and it raises."""

    def timestamps(self) -> dict[str, tuple[datetime, datetime]]:
        """license id -> (created, last changed)."""

    def seats_in_use(self, license_id: str, now: datetime, ttl_days: int) -> int: ...

    def close(self) -> None: ...


def open_store(settings: Settings) -> Store:
    """The registry ``settings.registry_url`` names: PostgreSQL shared by several hosts, or
    (no URL) the SQLite file in the data directory."""
    if settings.registry_url:
        from gateway.registry.postgres import PostgresStore
        return PostgresStore(settings.registry_url)
    from gateway.registry.sqlite import SqliteStore
    return SqliteStore(settings.db_path)


def open_signals(settings: Settings) -> Signals:
    """Generations, tallies and claims where the registry is (see :func:`open_store`)."""
    if settings.registry_url:
        from gateway.registry.postgres import PostgresSignals
        return PostgresSignals(settings.registry_url)
    from gateway.registry.signals import SqliteSignals
    return SqliteSignals(settings.db_path)


def open_shared_nonces(settings: Settings, window_s: int) -> SharedNonces:
    """The replay window every process of the registry shares (see :func:`open_store`): all the
    hosts on PostgreSQL, the workers of one host on SQLite."""
    if settings.registry_url:
        from gateway.registry.postgres import PostgresNonces
        return PostgresNonces(settings.registry_url, window_s)
    from gateway.registry.nonces import SqliteNonces
    return SqliteNonces(settings.db_path, window_s)


def admit_bundle(current: License | None, dated_us: int | None, incoming: License, sealed_us: int) -> bool:
    """Whether importing ``incoming``, from a bundle sealed at ``sealed_us``, changes the license
    stored here (``current``); raises :class:`StaleBundle` where it would roll it back.

    ``dated_us`` is the moment the stored state dates from: the seal time of the bundle it came
    from, or the moment of the latest change made here (issue, revoke, suspend, resume), whichever
    is later. A bundle is applied only if it was sealed after that, so neither a superseded
    bundle nor one sealed before a local revocation can bring an older state back; the issuer's
    newer word wins, except over a revocation, which is final (:class:`FinalRevocation`): a
    revoked key may have leaked, so only a new license brings the customer back. Importing what
    is already stored changes nothing and is never refused.
    """
    if current is None:
        return True
    if license_to_dict(incoming) == license_to_dict(current):
        return False
    if dated_us is not None and sealed_us <= dated_us:
        sealed = iso(from_us(sealed_us)) if sealed_us else "at an unknown time"
        raise StaleBundle(f"this bundle of license {current.license_id} (sealed {sealed}) is not newer than the "
                          f"license here (as of {iso(from_us(dated_us))}): ask the issuer for a fresh bundle",
                          current)
    check_status(current, incoming.status)
    return True


class LicenseIndex:
    """Licenses by key hash and by id, refreshed from the store's revision counter.

    The hot path never touches the store to find a license; other processes' changes (CLI,
    other workers, other hosts) arrive on the next :meth:`refresh`, or as what a read made
    elsewhere (off the event loop) brings to :meth:`apply`.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self.revision = 0
        self.by_hash: dict[str, License] = {}
        self.by_id: dict[str, License] = {}
        self.refresh()

    def refresh(self) -> int:
        """Pull changes from the store; returns how many licenses changed."""
        return self.apply(*self._store.licenses_since(self.revision))

    def apply(self, revision: int, changed: list[License]) -> int:
        """Take in the licenses changed up to ``revision`` (:meth:`Store.licenses_since`); a read
        that is not newer than what is here already (two reads racing) is ignored."""
        if revision <= self.revision:
            return 0
        self.revision = revision
        for lic in changed:
            old = self.by_id.get(lic.license_id)
            if old is not None and old.key_hash != lic.key_hash:
                self.by_hash.pop(old.key_hash, None)
            self.by_id[lic.license_id] = lic
            self.by_hash[lic.key_hash] = lic
        return len(changed)

    def __len__(self) -> int:
        return len(self.by_id)
