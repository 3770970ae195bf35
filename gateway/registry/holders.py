"""Seat holders a process wrote recently, so a check by one of them needs no transaction.

A seat holder's last use is rewritten at most every :data:`SEAT_TOUCH_US`: seats live for days,
so an hour of imprecision is harmless and saves a write on nearly every check. A holder this
process wrote within that hour therefore holds the seat in the shared registry too, and its check
would write nothing: it is decided from here. Only the seat count shown may be as old as this
process's last transaction on the license. Only what a transaction committed is remembered.
"""
from __future__ import annotations

SEAT_TOUCH_US = 3600 * 1_000_000
_HOLDERS_MAX = 500_000


class SeatHolders:
    def __init__(self) -> None:
        self._last: dict[tuple[str, str], int] = {}  # (license, user) -> last use written, µs
        self._counts: dict[str, int] = {}  # license -> seats in use at its last transaction here

    def recent(self, license_id: str, user_id: str, now_us: int) -> int | None:
        """The seat count to show if ``user_id`` is a holder written within the hour, else None."""
        seen = self._last.get((license_id, user_id))
        if seen is not None and now_us - seen <= SEAT_TOUCH_US:
            return self._counts.get(license_id, 1)
        return None

    def remember(self, license_id: str, user_id: str, last_seen_us: int, seats_used: int | None) -> None:
        if len(self._last) >= _HOLDERS_MAX:
            self._last.clear()  # a crude bound: entries only save work, losing them costs one transaction
        self._last[(license_id, user_id)] = last_seen_us
        if seats_used is not None:
            self._counts[license_id] = seats_used
