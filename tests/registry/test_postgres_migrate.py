"""Schema migrations of the PostgreSQL registry: applied once, in order, under a lock, safe for
hosts still running the previous version; ``portcullis migrate`` and ``init --registry-url``."""
from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.registry import RegistryUnavailable
from gateway.registry.migrate import latest_version, migrate, migrations
from gateway.registry.postgres import PostgresStore
from tests.pg import fresh_database

# What a migration may not do while hosts of the previous version run on the schema.
_BREAKING = re.compile(r"\b(DROP\b|RENAME\b|ALTER\s+COLUMN\s+\S+\s+(TYPE|SET\s+NOT\s+NULL)\b|TRUNCATE\b|DELETE\b)",
                       re.IGNORECASE)


@pytest.fixture
def blank_url():
    with fresh_database() as url:
        yield url


def _ledger(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()


def test_migrate_applies_every_file_once_in_order_and_again_nothing(blank_url):
    first = migrate(blank_url)
    assert first["applied"] == [f"{m.version:04d}_{m.name}" for m in migrations()]
    assert first["version"] == latest_version() >= 1
    assert migrate(blank_url) == {"applied": [], "version": latest_version(), "latest": latest_version()}
    assert _ledger(blank_url) == [(m.version, m.name) for m in migrations()]


def test_hosts_migrating_at_once_apply_each_migration_once(blank_url):
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: migrate(blank_url), range(4)))
    assert sorted(len(r["applied"]) for r in results) == [0, 0, 0, len(migrations())]
    assert len(_ledger(blank_url)) == len(migrations())


def test_migrations_only_add():
    """Rolling upgrades: the previous version keeps running on the new schema, so no migration
    drops, renames, retypes, tightens or empties anything."""
    versions = [m.version for m in migrations()]
    assert versions == list(range(1, len(versions) + 1)), "versions run 1, 2, 3 ... without gaps"
    for migration in migrations():
        statements = re.sub(r"--[^\n]*", "", migration.sql)
        assert not _BREAKING.search(statements), f"{migration.name}: {_BREAKING.search(statements)[0]}"


def test_a_store_refuses_an_unmigrated_registry(blank_url):
    with pytest.raises(RegistryUnavailable, match="schema version 0.*run portcullis migrate"):
        PostgresStore(blank_url)


def test_an_unreachable_registry_says_where_but_never_the_password():
    with pytest.raises(RegistryUnavailable, match=r"postgresql://127\.0\.0\.1:1/nowhere cannot be reached") as raised:
        PostgresStore("postgresql://postgres:hunter2-secret@127.0.0.1:1/nowhere")
    assert "hunter2" not in str(raised.value)
    with pytest.raises(RegistryUnavailable):
        migrate("postgresql://postgres:hunter2-secret@127.0.0.1:1/nowhere")


def test_migrate_and_init_commands(blank_url, tmp_path):
    runner = CliRunner()
    data = str(tmp_path / "data")
    shown = runner.invoke(main, ["migrate", "--registry-url", blank_url, "--json", "--data", data])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["applied"] == [f"{m.version:04d}_{m.name}" for m in migrations()]
    again = runner.invoke(main, ["migrate", "--registry-url", blank_url, "--data", data])
    assert again.exit_code == 0 and f"up to date; schema version {latest_version()}" in again.output
    init = runner.invoke(main, ["init", "--registry-url", blank_url, "--json", "--data", data])
    assert init.exit_code == 0, init.output
    assert json.loads(init.output)["registry"] == "postgresql"
    assert json.loads(init.output)["schema_version"] == latest_version()
    sqlite = runner.invoke(main, ["migrate", "--json", "--data", data], env={"PORTCULLIS_REGISTRY_URL": ""})
    assert json.loads(sqlite.output) == {"registry": "sqlite", "applied": []}
    down = runner.invoke(main, ["migrate", "--registry-url", "postgresql://postgres@127.0.0.1:1/x", "--data", data])
    assert down.exit_code == 1 and "cannot be reached" in down.output and "Traceback" not in down.output


def test_init_with_a_registry_url_creates_the_schema(blank_url, tmp_path):
    runner = CliRunner()
    init = runner.invoke(main, ["init", "--data", str(tmp_path / "data")], env={"PORTCULLIS_REGISTRY_URL": blank_url})
    assert init.exit_code == 0, init.output
    assert len(_ledger(blank_url)) == len(migrations())
    assert not (tmp_path / "data" / "portcullis.db").exists()  # the registry is in PostgreSQL only
