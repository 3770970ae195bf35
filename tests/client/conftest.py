"""A real gateway on a real data directory for the SDK tests, with its audit records in memory."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import pytest
from aiohttp.test_utils import TestServer

from gateway.audit import AuditRecord, MemorySink
from gateway.client import PortClient, SyncPortClient
from gateway.http.app import create_app
from gateway.http.keys import PORT
from gateway.port import Port
from tests.conftest import Credentials, DataDir, make_data_dir


def memory_sinks() -> tuple[list[MemorySink], Callable[[Any, str], MemorySink]]:
    """A sink factory for create_app / Enforcer that keeps every sink it made."""
    made: list[MemorySink] = []

    def factory(settings: Any, instance: str) -> MemorySink:
        made.append(MemorySink())
        return made[-1]
    return made, factory


@dataclass
class Live:
    """A running gateway: its address, its audit records and the port behind it."""

    server: TestServer
    data: DataDir
    sink: MemorySink
    url: str  # kept: it stays the gateway's address after the server is stopped

    @property
    def records(self) -> list[AuditRecord]:
        return self.sink.records

    @property
    def port(self) -> Port:
        return self.server.app[PORT]

    def issue(self, **fields):
        """Issue a license and let the gateway see it at once (instead of at its next refresh)."""
        issued = self.data.issue(**fields)
        self.port.refresh()
        return issued

    def client(self, creds: Credentials | None = None, **options) -> PortClient:
        creds = creds or self.data.service
        return PortClient(self.url, creds.key_id, creds.secret, **options)

    def sync_client(self, **options) -> SyncPortClient:
        return SyncPortClient(self.url, self.data.service.key_id, self.data.service.secret, **options)


StartGateway = Callable[..., Awaitable[Live]]


@pytest.fixture
def start_gateway(aiohttp_server, tmp_path) -> StartGateway:
    """Start a gateway on a fresh data directory; keyword arguments override settings."""
    async def start(clock=None, **settings) -> Live:
        data = make_data_dir(tmp_path / f"data{len(list(tmp_path.iterdir()))}", environment="prod", **settings)
        made, factory = memory_sinks()
        options = {"clock": clock} if clock else {}
        server = await aiohttp_server(create_app(data.settings, sink_factory=factory, **options))
        return Live(server, data, made[0], str(server.make_url("")))
    return start


@pytest.fixture
async def live(start_gateway) -> Live:
    return await start_gateway()
