"""A real aiohttp gateway over a real data directory, with the audit records kept in memory (or,
``durable_gateway``, written by the production sink)."""
from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.audit import AuditRecord, MemorySink
from gateway.http.app import create_app
from gateway.http.keys import GATE, PORT, SINK
from tests.conftest import wait_until


class Gateway:
    """A test client that signs requests like a calling service would."""

    def __init__(self, client, data, sink: MemorySink) -> None:
        self.client, self.data, self.sink = client, data, sink

    @property
    def records(self) -> list[AuditRecord]:
        return self.sink.records

    @property
    def port(self):
        return self.client.server.app[PORT]

    async def settled(self, strays: int = 1) -> list[AuditRecord]:
        """The records, once ``strays`` answers sent before any handler ran are audited (or
        counted lost): the server audits such an answer just after sending it."""
        gate = self.client.server.app[GATE]
        await wait_until(lambda: len(self.sink.records) + gate.lost_records >= strays,
                         what=f"{strays} refusals to be audited")
        await gate.settle()
        return self.sink.records

    async def metrics(self) -> dict[tuple[str, tuple], float]:
        """GET /metrics, parsed: {(sample name, sorted labels): value}."""
        response = await self.client.get("/metrics")
        assert response.status == 200 and response.content_type == "text/plain"
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(await response.text()) for s in family.samples}

    async def post(self, path: str, obj=None, *, creds=None, raw: bytes | None = None,
                   content_type: str = "application/json", headers: dict | None = None):
        body = raw if raw is not None else json.dumps(obj).encode()
        creds = creds or self.data.service
        sent = {"Content-Type": content_type, **creds.headers("POST", path, body), **(headers or {})}
        response = await self.client.post(path, data=body, headers=sent)
        return response.status, await response.json()

    async def get(self, path: str, *, creds=None):
        creds = creds or self.data.service
        response = await self.client.get(path, headers=creds.headers("GET", path))
        return response.status, await response.json()

    def issue(self, **fields):
        """Issue a license and let the running gateway see it at once (instead of its next refresh)."""
        issued = self.data.issue(**fields)
        self.port.refresh()
        return issued

    async def check(self, **fields):
        return await self.post("/v1/check", fields)


@pytest.fixture
async def gateway(aiohttp_client, data_dir) -> Gateway:
    sink = MemorySink()
    client = await aiohttp_client(create_app(data_dir.settings, sink_factory=lambda settings, instance: sink))
    return Gateway(client, data_dir, sink)


@pytest.fixture
def durable_gateway(aiohttp_client, data_dir):
    """Start a gateway whose audit trail is the production one (spool, Parquet): keyword
    arguments override settings; ``gateway.sink`` is its DurableSink, with its counters."""
    async def start(**overrides) -> Gateway:
        client = await aiohttp_client(create_app(data_dir.settings.with_(**overrides)))
        return Gateway(client, data_dir, client.server.app[SINK])
    return start
