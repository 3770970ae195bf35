"""License changes as every registry store makes them: each in one write transaction with the
rule that admits it (:func:`gateway.registry.admit_bundle`, :func:`gateway.registry.check_status`).

A store supplies the transaction, its driver's parameter placeholder and the SQL that differs
between dialects (``_write``, ``PARAM``, ``_date``, ``_put``); the order of the checks and writes,
which is what keeps a bundle from rolling a license back, is written once, here.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, ContextManager, Iterable

import orjson

from gateway.licenses import stored_license, to_us
from gateway.registry import admit_bundle, check_status
from gateway.types import License, Status


def now_us() -> int:
    return to_us(datetime.now(timezone.utc))


class LicenseWrites:
    PARAM = "?"  # the driver's parameter placeholder (sqlite3: ?, psycopg: %s)

    def _write(self) -> ContextManager[Any]:
        """A write transaction, one at a time per registry; yields the connection."""
        raise NotImplementedError

    def _dated(self, conn: Any, license_id: str) -> tuple[License | None, int | None]:
        """The stored license and the moment its state dates from (for a license stored before
        that was recorded: its last change)."""
        row = conn.execute("SELECT l.doc, coalesce(d.dated_us, l.updated_us) FROM licenses l LEFT JOIN dated d "
                           f"USING (license_id) WHERE l.license_id = {self.PARAM}", (license_id,)).fetchone()
        return (stored_license(orjson.loads(row[0])), row[1]) if row else (None, None)

    def _date(self, conn: Any, license_id: str, dated_us: int) -> None:
        """Record that the license's state dates from ``dated_us`` (seal stamps only move forward)."""
        raise NotImplementedError

    def _put(self, conn: Any, licenses: Iterable[License], dated_us: int) -> int:
        """Write what differs, bumping the revision; each license written dates from ``dated_us``
        (now for a change made here, the seal time for an imported bundle)."""
        raise NotImplementedError

    def put(self, licenses: Iterable[License]) -> int:
        now = now_us()
        with self._write() as conn:
            return self._put(conn, licenses, now)

    def put_sealed(self, lic: License, sealed_us: int) -> bool:
        with self._write() as conn:
            current, dated_us = self._dated(conn, lic.license_id)
            changed = admit_bundle(current, dated_us, lic, sealed_us)
            if changed:
                self._put(conn, [lic], sealed_us)
        return changed

    def seal_stamp(self, license_id: str, now_us: int) -> tuple[License, int] | None:
        with self._write() as conn:
            current, dated_us = self._dated(conn, license_id)
            if current is None:
                return None
            stamp = max(now_us, (dated_us or 0) + 1)
            self._date(conn, license_id, stamp)
        return current, stamp

    def set_status(self, license_id: str, status: Status) -> License | None:
        with self._write() as conn:
            current, _ = self._dated(conn, license_id)
            if current is None:
                return None
            check_status(current, status)
            updated = current._replace(status=status)
            self._put(conn, [updated], now_us())
        return updated
