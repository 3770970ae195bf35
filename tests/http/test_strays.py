"""Refusals answered before any handler runs (gateway.http.strays): audited after the answer,
in one background writer whose backlog is bounded, with errors counted rather than raised."""
from __future__ import annotations

import asyncio

from gateway.audit import MemorySink
from gateway.http import gate as gate_module
from gateway.http.app import create_app
from gateway.http.keys import GATE
from tests.conftest import wait_until
from tests.http.conftest import Gateway


class HeldSink(MemorySink):
    """An audit trail whose disk has stalled until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def submit(self, records) -> None:
        await self.release.wait()
        await super().submit(records)


async def test_a_stalled_trail_bounds_the_backlog_and_counts_what_it_drops(aiohttp_client, data_dir, monkeypatch):
    monkeypatch.setattr(gate_module, "LATE_MAX", 2)
    sink = HeldSink()
    client = await aiohttp_client(create_app(data_dir.settings, sink_factory=lambda settings, instance: sink))
    gateway = Gateway(client, data_dir, sink)
    for i in range(5):
        assert (await client.get(f"/v1/nowhere-{i}")).status == 404  # answered while the trail stalls
    gate = client.server.app[GATE]
    # One being written, two waiting, two over the limit.
    await wait_until(lambda: gate.lost_records == 2, what="two refusals over the limit")
    sink.release.set()
    records = await gateway.settled(strays=5)
    assert [r.error for r in records] == [f"Not Found: GET /v1/nowhere-{i}" for i in range(3)]


async def test_a_failing_trail_loses_strays_counted_and_keeps_serving(gateway):
    async def broken(records):
        raise ValueError("a bug in the trail")

    gateway.sink.submit = broken
    assert (await gateway.client.get("/v1/nowhere")).status == 404
    await gateway.settled()
    assert gateway.client.server.app[GATE].lost_records == 1
    assert (await gateway.client.get("/healthz")).status == 200


async def test_a_stray_records_how_long_it_took_not_zero(gateway):
    assert (await gateway.client.get("/v1/nowhere")).status == 404
    (record,) = await gateway.settled()
    assert record.latency_us >= 1  # from when aiohttp began reading the request
