"""``portcullis registry copy``: a single-host SQLite registry moved into PostgreSQL whole —
licenses with revisions and seal stamps, seats, counters, nonces in force, generations, claims."""
from __future__ import annotations

import asyncio
import json
import sqlite3
import time

import psycopg
import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.registry.copy import TABLES, CopyError, copy_registry
from gateway.registry.nonces import SqliteNonces
from gateway.registry.postgres import PostgresNonces, PostgresStore
from gateway.registry.signals import POLICY_GENERATION, SqliteSignals
from gateway.registry.sqlite import SqliteStore
from gateway.types import Status
from tests.engine.test_engine import build_license
from tests.registry.test_store import _metered


@pytest.fixture
def single_host(tmp_path):
    """A registry with a bit of everything, as one host running for a while leaves it."""
    path = tmp_path / "portcullis.db"
    store = SqliteStore(path)
    licenses = [build_license({"tier": "strict", "seats": 3})._replace(license_id=f"lic_{i}", key_hash=f"{i:064}")
                for i in range(4)]
    store.put(licenses[:2])
    store.put_sealed(licenses[2], 1_000_000)
    store.put([licenses[3]])
    store.set_status("lic_1", Status.SUSPENDED)
    store.seal_stamp("lic_0", int(time.time() * 1e6))
    asyncio.run(store.decide_many([_metered(licenses[0], f"u{i}", 2) for i in range(3)]
                                  + [_metered(licenses[3], "u9", 1)]))
    store.close()
    nonces = SqliteNonces(path, window_s=300)
    now = time.time()
    assert nonces.add("still-in-force", now) and nonces.add("long-expired", now - 3600)
    nonces.close()
    signals = SqliteSignals(path)
    signals.bump(POLICY_GENERATION)
    signals.bump(POLICY_GENERATION)
    signals.claim(["expiry:lic_0:30"])
    signals.close()
    return path


def _sqlite_rows(path, table) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return sorted(conn.execute(f"SELECT {table.columns} FROM {table.name}").fetchall())
    finally:
        conn.close()


def _pg_rows(url, table) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return sorted(conn.execute(f"SELECT {table.columns} FROM {table.name}").fetchall())


def test_copy_moves_the_whole_registry(single_host, pg_url):
    runner = CliRunner()
    shown = runner.invoke(main, ["registry", "copy", "--from", f"sqlite:{single_host}", "--to", pg_url, "--json"])
    assert shown.exit_code == 0, shown.output
    result = json.loads(shown.output)
    assert result["copied"] == {"licenses": 4, "dated": 4, "seats": 4, "usage": 2, "nonces": 1, "generations": 1,
                                "claims": 1, "callers": 0, "caller_keys": 0}  # no callers.toml beside it
    for table in TABLES:
        if table.name != "nonces":
            assert _pg_rows(pg_url, table) == _sqlite_rows(single_host, table), table.name
    assert [n for n, _ in _pg_rows(pg_url, TABLES[4])] == ["still-in-force"]  # only those in force

    before, after = SqliteStore(single_host), PostgresStore(pg_url)
    (rev_after, after_licenses), (rev_before, before_licenses) = after.licenses_since(0), before.licenses_since(0)
    assert rev_after == rev_before == 4  # four changes: the registry goes on from the same revision
    assert sorted(after_licenses) == sorted(before_licenses)
    assert after.timestamps() == before.timestamps()
    assert after.seal_stamp("lic_0", 0) == before.seal_stamp("lic_0", 0)  # seal stamps carried over
    nonces = PostgresNonces(pg_url, window_s=300)
    assert asyncio.run(nonces.record("still-in-force", time.time())) is False  # no replay after the move
    for closing in (before, after, nonces):
        closing.close()

    again = runner.invoke(main, ["registry", "copy", "--from", f"sqlite:{single_host}", "--to", pg_url])
    assert again.exit_code == 1 and "already has licenses: copy only into a new one" in again.output


def test_copy_refuses_what_it_cannot_read(tmp_path, pg_url):
    with pytest.raises(CopyError, match="no such registry file"):
        copy_registry(tmp_path / "absent.db", pg_url)
    shown = CliRunner().invoke(main, ["registry", "copy", "--from", str(tmp_path / "x.db"), "--to", pg_url])
    assert shown.exit_code == 2 and "must be sqlite:PATH" in shown.output
