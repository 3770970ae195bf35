"""PostgreSQL for the tests: a fresh database per test module on the server every machine runs
(127.0.0.1:5432, trust, user postgres), dropped afterwards. Unreachable: skipped on a developer's
machine, a loud failure in CI (``CI=true``): tests of the shared registry never skip there."""
from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import urlsplit

import psycopg
import pytest

SERVER = os.environ.get("PORTCULLIS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _url(dbname: str) -> str:
    return urlsplit(SERVER)._replace(path=f"/{dbname}").geturl()


@contextmanager
def fresh_database(prefix: str = "portcullis_test") -> Iterator[str]:
    """The URL of a new, empty database (not migrated), dropped on the way out."""
    try:
        admin = psycopg.connect(SERVER, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is not reachable at {SERVER} (required in CI): {exc}")
        pytest.skip(f"PostgreSQL is not reachable at {SERVER}: {exc}")
    name = f"{prefix}_{secrets.token_hex(6)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield _url(name)
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def truncate(url: str) -> None:
    """Empty every registry table of a migrated database (the schema and its ledger stay)."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations'")]
        conn.execute(f"TRUNCATE {', '.join(tables)}")  # noqa: S608 - the server's own table names
        conn.execute("INSERT INTO meta VALUES ('revision', 0)")
