"""The hostile-input suite: a gateway whose audit sink refuses exactly what the durable trail
refuses (records that do not fit the Parquet schema), so a request that could not be audited
in production fails here too."""
from __future__ import annotations

from typing import Sequence

import pytest

from gateway.audit import AuditRecord, MemorySink
from gateway.audit.schema import AUDIT_SCHEMA
from gateway.audit.records import RecordEncoder
from gateway.http.app import create_app
from tests.http.conftest import Gateway

_ENCODER = RecordEncoder(AUDIT_SCHEMA)


class SchemaSink(MemorySink):
    async def submit(self, records: Sequence[AuditRecord]) -> None:
        _ENCODER.arrow(list(records))  # raise InvalidRecord as the spool would, in either encoding
        _ENCODER.json_lines(list(records))
        await super().submit(records)


@pytest.fixture
async def gateway(aiohttp_client, data_dir) -> Gateway:
    sink = SchemaSink()
    client = await aiohttp_client(create_app(data_dir.settings, sink_factory=lambda settings, instance: sink))
    return Gateway(client, data_dir, sink)
