"""A migrated PostgreSQL registry per test module (tests/pg.py), emptied before each test."""
from __future__ import annotations

import pytest

from gateway.registry.migrate import migrate
from tests.pg import fresh_database, truncate


@pytest.fixture(scope="module")
def pg_server_url():
    with fresh_database() as url:
        migrate(url)
        yield url


@pytest.fixture
def pg_url(pg_server_url):
    truncate(pg_server_url)
    return pg_server_url
