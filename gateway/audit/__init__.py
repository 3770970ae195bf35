"""Audit adapter: the sink interface the HTTP layer hands records to.

An audit record is an :class:`~gateway.audit.schema.AuditRecord`, a namedtuple of
:data:`~gateway.audit.schema.COLUMNS` in schema order. Backends live in their own modules.
"""
from __future__ import annotations

from typing import Protocol, Sequence

from gateway.audit.schema import AUDIT_SCHEMA, COLUMNS, AuditRecord


class AuditUnavailable(Exception):
    """The record could not be made durable: the caller must answer 503 AUDIT_UNAVAILABLE."""


class AuditSink(Protocol):
    async def submit(self, records: Sequence[AuditRecord]) -> None:
        """Return once the records are acknowledged (durable in ``durable`` mode).

        Raises :class:`AuditUnavailable` when they cannot be made durable.
        """

    def healthy(self) -> bool:
        """False while the sink cannot accept records (``/readyz`` fails)."""

    async def close(self) -> None:
        """Flush everything acknowledged and release resources."""


class MemorySink:
    """Keeps records in a list: for tests and for embedding without a trail."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    async def submit(self, records: Sequence[AuditRecord]) -> None:
        self.records.extend(records)

    def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        return None


__all__ = ["AUDIT_SCHEMA", "COLUMNS", "AuditRecord", "AuditSink", "AuditUnavailable", "MemorySink"]
