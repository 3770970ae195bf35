"""Whether the shared registry (PostgreSQL) answered the last time anyone asked (SPEC §11).

One failure seen anywhere in a worker (a check's transaction, a nonce, the upkeep's poll) marks the
registry unreachable for the whole worker, so every later request is answered at once instead of
each waiting for a connection to time out: 503 ``REGISTRY_UNAVAILABLE``, or in the "cached" mode a
decision from this host's copy of the licenses. The upkeep keeps polling twice a second; its first
success marks the registry reachable again, so the host recovers by itself. Transitions are
logged once each, not once per request.
"""
from __future__ import annotations

import asyncio
import logging

from gateway.auth import NonceCache
from gateway.registry import RegistryBusy, RegistryUnavailable

log = logging.getLogger("portcullis.registry")


class Reachability:
    def __init__(self, cached: bool = False) -> None:
        self.reachable = True
        self.cached = cached  # registry_on_unavailable = "cached"
        self._why = ""

    def failed(self, exc: RegistryUnavailable) -> None:
        """Mark the registry unreachable, unless it merely answered slowly (:class:`RegistryBusy`:
        that request fails alone)."""
        if isinstance(exc, RegistryBusy):
            return
        if self.reachable:
            log.error("registry unreachable", extra={"event": "registry_unavailable", "error": str(exc),
                                                     "mode": "cached" if self.cached else "deny"})
        self.reachable, self._why = False, str(exc)

    def succeeded(self) -> None:
        if not self.reachable:
            log.info("registry reachable again", extra={"event": "registry_recovered"})
        self.reachable = True

    def require(self) -> None:
        """Raise :class:`RegistryUnavailable` at once while the registry is marked unreachable."""
        if not self.reachable:
            raise RegistryUnavailable(self._why or "the registry cannot be reached")


class ReachableNonces:
    """The shared replay window, as reachable as the registry it lives in.

    While the registry is unreachable a nonce cannot be recorded where every host sees it: the
    "deny" mode refuses the request (503) at once, the "cached" mode records the nonce in this
    process alone, so for the length of the outage a request could be replayed once to each other
    host (documented: docs/operations.md). In that mode every nonce is also kept here, so one
    accepted during the outage is still refused here after the registry is back, and the ones
    accepted during it are handed to the registry as soon as it answers again, closing the window
    for the other hosts too.
    """

    def __init__(self, shared, reach: Reachability, window_s: int) -> None:
        self.shared, self.reach, self.window_s = shared, reach, window_s
        self.local = NonceCache(window_s) if reach.cached else None
        self._held: list[tuple[str, int]] = []  # (nonce, second it expires) accepted here alone

    async def record(self, nonce: str, now: float) -> bool:
        if self.local is not None and not self.local.add(nonce, now):
            return False
        try:
            self.reach.require()
            accepted = await self.shared.record(nonce, now)
        except RegistryUnavailable as exc:
            self.reach.failed(exc)
            if self.local is None or isinstance(exc, RegistryBusy):
                raise
            self._held.append((nonce, int(now + 2 * self.window_s) + 1))
            return True  # recorded above, in this process only
        if self._held:
            await self._hand_over()
        return accepted

    async def _hand_over(self) -> None:
        held, self._held = self._held, []
        try:
            await asyncio.to_thread(self.shared.absorb, held)
        except RegistryUnavailable:
            self._held = held + self._held  # the next request tries again

    def close(self) -> None:
        self.shared.close()
