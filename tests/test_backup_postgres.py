"""``portcullis backup`` and ``restore`` of a data directory whose registry lives in PostgreSQL
(a real database, tests/pg.py): everything but the registry is backed up, the output says plainly
that the registry is pg_dump's to back up, and the restored directory serves from the shared
registry as it is."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.conftest import portcullis
from tests.pg import fresh_database
from tests.test_backup import one_line_error
from tests.test_workers import CHECK, post, start

pytestmark = pytest.mark.slow
PASSWORD = "never-printed-7f3a"  # trust authentication ignores it: it must still never be shown


@pytest.fixture
def shared(tmp_path):
    """A data directory initialised on a fresh PostgreSQL registry, with one caller and one license;
    ``env`` names the registry by a URL that carries a password."""
    with fresh_database() as url:
        parts = urlsplit(url)
        url = parts._replace(netloc=f"{parts.username}:{PASSWORD}@{parts.hostname}:{parts.port}").geturl()
        env = {"PORTCULLIS_REGISTRY_URL": url}
        data = tmp_path / "data"
        assert portcullis("init", "--data", str(data), "--registry-url", url, env=env).returncode == 0
        caller = json.loads(portcullis("caller", "add", "svc", "--json", "--data", str(data), env=env).stdout)
        issued = portcullis("license", "issue", "--customer", "acme", "--tier", "pro", "--json", "--data", str(data),
                            env=env)
        assert issued.returncode == 0, issued.stderr
        yield SimpleNamespace(data=data, env=env, url=url, location=f"postgresql://{parts.hostname}:{parts.port}{parts.path}",
                              creds=SimpleNamespace(key_id=caller["key_id"], secret=caller["secret"]),
                              license=json.loads(issued.stdout))


async def test_a_backup_holds_everything_but_the_registry_and_restores_onto_the_shared_one(shared, tmp_path, spawn):
    backup = tmp_path / "backup"
    taken = portcullis("backup", str(backup), "--data", str(shared.data), "--json", env=shared.env)
    assert taken.returncode == 0, taken.stderr
    result = json.loads(taken.stdout)
    assert result["registry"] == {"kind": "postgresql", "copied": False, "backed_up_by": "pg_dump", "licenses": 1,
                                  "revision": result["registry"]["revision"],
                                  "location": shared.location}
    assert result["registry"]["revision"] >= 1
    assert "registry: not copied, it lives in PostgreSQL" in taken.stderr and "pg_dump" in taken.stderr
    manifest = json.loads((backup / "backup.json").read_text())
    assert manifest["registry"] == result["registry"]
    assert not (backup / "portcullis.db").exists() and "portcullis.db" not in manifest["files"]
    assert {"policy.toml", "keys/fingerprint.secret", "keys/registry_seal.key"} <= set(manifest["files"])
    for text in (taken.stdout, taken.stderr, (backup / "backup.json").read_text()):
        assert PASSWORD not in text

    said = portcullis("backup", str(tmp_path / "again"), "--data", str(shared.data), env=shared.env)
    assert said.returncode == 0 and "registry NOT in this backup" in said.stdout and "pg_dump" in said.stdout, said
    assert PASSWORD not in said.stdout + said.stderr

    restored = tmp_path / "restored"
    put_back = portcullis("restore", str(backup), "--data", str(restored), "--json", env=shared.env)
    assert put_back.returncode == 0, put_back.stderr
    assert json.loads(put_back.stdout)["registry"] == {
        "kind": "postgresql", "restored": False, "location": shared.location}
    assert not (restored / "portcullis.db").exists(), "a restore onto PostgreSQL makes no SQLite registry"
    server = start(spawn, SimpleNamespace(path=restored), workers=1, env=shared.env)
    async with aiohttp.ClientSession() as session:
        status, answer = await post(session, server.url, shared.creds, CHECK, {
            "license_key": shared.license["key"], "feature": "reports.sales", "user_id": "u1"})
    assert server.stop() == 0
    assert (status, answer["decision"], answer["license"]["id"]) == (200, "allow", shared.license["license_id"])

    told = portcullis("restore", str(backup), "--data", str(tmp_path / "told"), env=shared.env)
    assert told.returncode == 0 and "registry not restored: it lives in PostgreSQL" in told.stdout, told
    assert "as of the backup: redo revocations" not in told.stdout and PASSWORD not in told.stdout


def test_a_restore_that_cannot_name_the_registry_is_refused_before_anything_changes(shared, tmp_path):
    backup = tmp_path / "backup"
    assert portcullis("backup", str(backup), "--data", str(shared.data), env=shared.env).returncode == 0
    restored = tmp_path / "restored"
    one_line_error(portcullis("restore", str(backup), "--data", str(restored), env={"PORTCULLIS_REGISTRY_URL": ""}),
                   "lives in PostgreSQL", "PORTCULLIS_REGISTRY_URL", "nothing was restored")
    assert not restored.exists()


def test_a_backup_whose_registry_cannot_be_reached_is_one_line_and_leaves_nothing(shared, tmp_path):
    target = tmp_path / "backup"
    down = f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/portcullis"  # nothing listens on port 1
    result = portcullis("backup", str(target), "--data", str(shared.data), env={"PORTCULLIS_REGISTRY_URL": down})
    one_line_error(result, "cannot be reached", "127.0.0.1:1")
    assert PASSWORD not in result.stderr and not target.exists()


def test_a_restore_while_the_registry_is_unreachable_restores_the_files_and_says_what_is_left(shared, tmp_path):
    backup = tmp_path / "backup"
    assert portcullis("backup", str(backup), "--data", str(shared.data), env=shared.env).returncode == 0
    restored = tmp_path / "restored"
    down = f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/portcullis"
    result = portcullis("restore", str(backup), "--data", str(restored), env={"PORTCULLIS_REGISTRY_URL": down})
    one_line_error(result, f"restored into {restored}", "cannot be reached", "portcullis init")
    assert PASSWORD not in result.stderr
    seal = Path("keys") / "registry_seal.key"
    assert (restored / seal).read_bytes() == (shared.data / seal).read_bytes()
    assert not (restored / "snapshots").exists()
    again = portcullis("init", "--data", str(restored), env=shared.env)  # once the registry is back
    assert again.returncode == 0 and (restored / "snapshots").is_dir(), again.stderr
