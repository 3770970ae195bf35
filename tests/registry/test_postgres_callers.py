"""Callers in the PostgreSQL registry (SPEC §11), against the real server: what goes in comes out,
the secrets are stored only sealed, a tampered or moved sealed secret and a wrong key file are
refused with a clear error, and every change moves the revision and is announced."""
from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from contextlib import closing
from pathlib import Path

import psycopg
import pytest

from gateway.audit import MemorySink
from gateway.callers import Caller, CallerFiles, CallersError
from gateway.http.app import create_app
from gateway.registry import seal
from gateway.registry.postgres_callers import PostgresCallers
from tests.conftest import Credentials, make_data_dir, portcullis, wait_until
from tests.pg import fresh_database

@pytest.fixture(scope="module")
def pg_server_url(pg_server_url) -> str:
    """This module's own migrated database (tests/registry/conftest.py)."""
    return pg_server_url


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    """This deployment's keys/ (every test's callers share the module's database)."""
    path = tmp_path_factory.mktemp("host-a") / "keys"
    seal.create_key(path)
    return path


@pytest.fixture
def callers(pg_server_url, keys):
    with closing(PostgresCallers(pg_server_url, keys)) as store:
        yield store


def _sql(url: str, query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def _name() -> str:
    return "svc-" + secrets.token_hex(4)


def test_callers_round_trip_and_every_host_with_the_keys_reads_them(callers, pg_server_url, keys, tmp_path):
    name, mtls_only = _name(), _name()
    first = callers.add(Caller(name, products=("suite",), features=("view", "export*"), environments=("prod",),
                               admin=True, rate_limit_rps=50.0))
    assert callers.add(Caller(mtls_only, mtls_identities=("spiffe://acme/svc",)), with_key=False) is None
    second = callers.rotate(name)
    callers.limit(name, 75.0)
    directory = callers.load()
    expected = Caller(name, key_ids=(first[0], second[0]), products=("suite",), features=("view", "export*"),
                      environments=("prod",), admin=True, rate_limit_rps=75.0)
    assert directory.callers[name] == expected
    assert directory.callers[mtls_only] == Caller(mtls_only, mtls_identities=("spiffe://acme/svc",))
    assert directory.by_identity["spiffe://acme/svc"].caller_id == mtls_only
    assert {k: directory.secrets[k] for k in expected.key_ids} == {first[0]: first[1].encode(),
                                                                  second[0]: second[1].encode()}
    other_host = tmp_path / "host-b" / "keys"
    shutil.copytree(keys, other_host)  # keys/ as the deployment distributes them
    with closing(PostgresCallers(pg_server_url, other_host)) as elsewhere:
        assert elsewhere.load() == directory
    callers.drop_key(name, first[0])
    callers.remove(mtls_only)
    directory = callers.load()
    assert directory.callers[name].key_ids == (second[0],) and first[0] not in directory.secrets
    assert mtls_only not in directory.callers


def test_edits_that_cannot_be_made_are_refused_and_change_nothing(callers):
    name = _name()
    callers.add(Caller(name))
    before = callers.version()
    refusals = [(lambda: callers.add(Caller(name)), "already exists"),
                (lambda: callers.add(Caller(_name(), key_ids=("pk_mine",))), "give none"),
                (lambda: callers.rotate("nobody"), "no caller named 'nobody'"),
                (lambda: callers.drop_key(name, "pk_nope"), "has no key 'pk_nope'"),
                (lambda: callers.limit("nobody", 1.0), "no caller named"),
                (lambda: callers.remove("nobody"), "no caller named")]
    for edit, error in refusals:
        with pytest.raises(CallersError, match=error):
            edit()
    assert callers.version() == before


def test_the_database_never_holds_a_secret_in_clear(callers, pg_server_url):
    name = _name()
    made = [callers.add(Caller(name)), callers.rotate(name)]
    dump = subprocess.run([_pg_dump(), "--data-only", pg_server_url], capture_output=True, check=True).stdout
    stored = b"".join(bytes(row[0]) for row in _sql(pg_server_url, "SELECT sealed FROM caller_keys"))
    for key_id, secret in made:
        assert key_id.encode() in dump  # the dump is of the rows that hold them
        for form in (secret.encode(), secret.encode().hex().encode(), secret[3:].encode()):
            assert form not in dump and form not in stored


def test_a_tampered_or_moved_sealed_secret_refuses_to_load(callers, pg_server_url):
    victim, thief = _name(), _name()
    victim_key, _ = callers.add(Caller(victim))
    thief_key, _ = callers.add(Caller(thief))
    (sealed,) = _sql(pg_server_url, "SELECT sealed FROM caller_keys WHERE key_id = %s", (victim_key,))[0]
    (own,) = _sql(pg_server_url, "SELECT sealed FROM caller_keys WHERE key_id = %s", (thief_key,))[0]
    flipped = bytearray(sealed)
    flipped[-5] ^= 0x01
    cases = [(victim_key, bytes(flipped), f"caller '{victim}' key '{victim_key}' does not open: it was altered"),
             (thief_key, bytes(sealed), f"caller '{thief}' key '{thief_key}' does not open: .* moved from another"),
             (victim_key, bytes(sealed[:10]), "is not a sealed secret")]
    put = "UPDATE caller_keys SET sealed = %s WHERE key_id = %s"
    for key_id, planted, error in cases:
        _sql(pg_server_url, put, (planted, key_id))
        with pytest.raises(CallersError, match=error):
            callers.load()
        _sql(pg_server_url, put, (sealed, victim_key))
        _sql(pg_server_url, put, (own, thief_key))
        assert callers.load().secrets[victim_key]  # restored, it opens again
    # Bound to the key id as well: the row under another key id of the same caller does not open.
    _sql(pg_server_url, "UPDATE caller_keys SET key_id = %s WHERE key_id = %s", ("pk_renamed", victim_key))
    with pytest.raises(CallersError, match="key 'pk_renamed' does not open"):
        callers.load()
    callers.remove(victim)
    callers.remove(thief)
    assert callers.load()  # the rest still load


def test_a_wrong_missing_or_malformed_seal_key_is_a_clear_error(callers, pg_server_url, tmp_path):
    callers.add(Caller(_name()))
    other = tmp_path / "other-keys"
    seal.create_key(other)  # a host that ran its own `portcullis init`
    with closing(PostgresCallers(pg_server_url, other)) as wrong:
        with pytest.raises(CallersError, match=r"under another registry seal key .*every host needs the same keys/"):
            wrong.load()
    key_file = seal.key_path(other)
    key_file.write_text("not hex at all")
    with pytest.raises(CallersError, match="registry_seal.key is not a 256-bit key"):
        PostgresCallers(pg_server_url, other)
    key_file.unlink()
    with pytest.raises(CallersError, match="registry_seal.key is missing: `portcullis init` makes it"):
        PostgresCallers(pg_server_url, other)


def test_every_change_moves_the_version_and_is_announced_in_its_transaction(callers, pg_server_url):
    listener = psycopg.connect(pg_server_url, autocommit=True)
    listener.execute("LISTEN portcullis_changes")

    def announced(timeout: float = 10.0) -> list[str]:  # returns at the first notification
        return [note.payload for note in listener.notifies(timeout=timeout, stop_after=1)]

    name = _name()
    versions = [callers.version()]
    key_id, _ = callers.add(Caller(name))
    edits = [lambda: callers.rotate(name), lambda: callers.limit(name, 3.0), lambda: callers.drop_key(name, key_id),
             lambda: callers.add(Caller(name + "-tls"), with_key=False), lambda: callers.remove(name)]
    assert announced() == ["callers"]
    versions.append(callers.version())
    for edit in edits:
        edit()
        assert announced() == ["callers"]
        versions.append(callers.version())
    assert versions == sorted(set(versions)), versions  # every edit moved it forward
    with pytest.raises(CallersError):
        callers.remove(name)  # no longer there: nothing changed, nothing announced
    assert announced(timeout=0.5) == [] and callers.version() == versions[-1]
    listener.close()


def _pg_dump() -> str:
    found = shutil.which("pg_dump") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"))), None)
    assert found, "pg_dump is not installed"
    return str(found)


def test_a_revision_row_lost_is_made_again(callers, pg_server_url):
    _sql(pg_server_url, "DELETE FROM meta WHERE key = 'callers_revision'")  # as an emptied registry would be
    before = callers.version()
    callers.add(Caller(_name()), with_key=False)
    assert callers.version() != before


def test_the_caller_commands_edit_the_registry_when_it_is_postgresql(pg_server_url, keys, tmp_path):
    data = tmp_path / "data"
    env = {"PORTCULLIS_REGISTRY_URL": pg_server_url}
    shutil.copytree(keys, data / "keys")  # the deployment's keys/, which init keeps
    assert portcullis("init", "--data", str(data), env=env).returncode == 0
    assert seal.key_path(data / "keys").read_bytes() == seal.key_path(keys).read_bytes()
    files = (data / "callers.toml").read_bytes()

    def run(*args: str) -> str:
        result = portcullis("caller", *args, "--data", str(data), env=env)
        assert result.returncode == 0, result.stderr
        return result.stdout

    name = _name()
    made = json.loads(run("add", name, "--features", "view", "--json"))
    rotated = json.loads(run("rotate", name, "--json"))
    run("limit", name, "9")
    run("drop-key", name, made["key_id"])
    listed = {c["caller_id"]: c for c in json.loads(run("list", "--json"))["callers"]}
    assert listed[name]["key_ids"] == [rotated["key_id"]] and listed[name]["rate_limit_rps"] == 9.0
    with closing(PostgresCallers(pg_server_url, keys)) as callers:
        directory = callers.load()
    assert directory.secrets[rotated["key_id"]] == rotated["secret"].encode()
    assert directory.callers[name].features == ("view",)
    run("remove", name)
    assert name not in json.loads(run("list", "--json"))["callers"]
    assert (data / "callers.toml").read_bytes() == files  # the files are not the callers any more
    assert not (data / "keys" / "hmac_secrets.json").exists()
    seal.key_path(data / "keys").write_text(secrets.token_hex(32))
    refused = portcullis("caller", "list", "--data", str(data), env=env)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "sealed under another registry seal key" in refused.stderr


async def test_a_running_gateway_authenticates_registry_callers_and_drops_a_removed_one(
        aiohttp_client, pg_server_url, keys, callers, tmp_path):
    data = make_data_dir(tmp_path / "data", environment="prod")
    shutil.copy(seal.key_path(keys), seal.key_path(data.settings.keys_dir))
    app = create_app(data.settings.with_(registry_url=pg_server_url), sink_factory=lambda s, i: MemorySink())
    client = await aiohttp_client(app)
    name = _name()
    creds = Credentials(*callers.add(Caller(name)))
    body = b'{"license_key": "LK-nothing", "feature": "view"}'

    async def status() -> int:
        headers = {**creds.headers("POST", "/v1/check", body), "Content-Type": "application/json"}
        return (await client.post("/v1/check", data=body, headers=headers)).status

    await wait_until(lambda: _is(status, 200), timeout=5, what="the new caller to be known")
    callers.remove(name)
    began = time.monotonic()
    await wait_until(lambda: _is(status, 401), timeout=5, what="the removal to take effect")
    assert time.monotonic() - began < 1.0


async def _is(status, expected: int) -> bool:
    return await status() == expected


def test_registry_copy_brings_the_callers_with_their_secrets_sealed(tmp_path):
    data = make_data_dir(tmp_path / "data")  # three callers in callers.toml and keys/hmac_secrets.json
    files = CallerFiles(data.settings.callers_path, data.settings.keys_dir).load()
    with fresh_database("portcullis_copy") as conninfo:
        url = "postgresql://{user}@{host}:{port}/{dbname}".format(**psycopg.conninfo.conninfo_to_dict(conninfo))
        args = ("registry", "copy", "--from", f"sqlite:{data.settings.db_path}", "--to", url)
        copied = portcullis(*args, "--json")
        assert copied.returncode == 0, copied.stderr
        assert {k: v for k, v in json.loads(copied.stdout)["copied"].items() if "caller" in k} == \
            {"callers": 3, "caller_keys": 3}
        with closing(PostgresCallers(url, data.settings.keys_dir)) as callers:
            assert callers.load() == files
        for secret in files.secrets.values():
            assert secret not in b"".join(bytes(row[0]) for row in _sql(url, "SELECT sealed FROM caller_keys"))
        again = portcullis(*args)
        assert again.returncode == 1 and "already has" in again.stderr and "Traceback" not in again.stderr
