"""``portcullis backup`` and ``restore`` as real processes on real data directories: a backup taken
while a two-worker gateway serves consuming checks restores to a gateway that decides the same, and
a damaged backup, a non-empty or live target are refused with one line."""
from __future__ import annotations

import asyncio
import hashlib
import json
import stat
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import duckdb
import pytest

from gateway.audit.compact import compact
from gateway.audit.manifest import Manifest
from gateway.backup import take
from gateway.keyfiles import audit_key
from gateway.types import Period, Quota, Status
from tests.audit.conftest import add_file
from tests.conftest import portcullis
from tests.test_workers import CHECK, fresh_connections, post, start

pytestmark = pytest.mark.slow
PROGRESS = ("registry: ", "keys: ", "audit: ", "verified and staged ")  # how progress lines on stderr begin


async def portcullis_async(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", *args, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode(), err.decode()


def one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 1, result
    errors = [line for line in result.stderr.splitlines() if not line.startswith(PROGRESS)]
    assert len(errors) == 1 and errors[0].startswith("Error: ") and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def _load(url: str, creds, keys: tuple[str, str], stop: asyncio.Event, answered: list[int]) -> None:
    """Seat- and quota-consuming checks on the background licenses until ``stop``."""
    seats_key, quota_key = keys
    async with fresh_connections() as session:
        while not stop.is_set():
            for doc in ({"license_key": seats_key, "feature": "view", "user_id": f"bg-{time.time_ns()}"},
                        {"license_key": quota_key, "feature": "export", "user_id": "bg", "quantity": 1}):
                status, _ = await post(session, url, creds, CHECK, doc)
                assert status == 200
                answered.append(time.monotonic_ns())


async def _decide(url: str, creds, probes: list[dict]) -> list[tuple[str, str]]:
    """The probes one after another (their order decides who gets the last seat or unit)."""
    async with aiohttp.ClientSession() as session:
        answers = [await post(session, url, creds, CHECK, doc) for doc in probes]
    return [(body["decision"], body["reason"]) for _, body in answers]


def _key_fps(data: Path, license_id: str) -> set[str]:
    return {row[0] for row in duckdb.sql(
        f"SELECT DISTINCT key_fp FROM read_parquet('{data}/audit/date=*/hour=*/*.parquet') "
        f"WHERE license_id = '{license_id}'").fetchall()}


def _used(db: Path, license_id: str) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT SUM(used) FROM usage WHERE license_id=?", (license_id,)).fetchone()[0]


async def test_a_backup_under_load_restores_to_a_gateway_that_decides_the_same(data_dir, spawn, tmp_path):
    seated = data_dir.issue(tier="basic")  # 5 seats + 20 %: the 7th user is refused
    metered = data_dir.issue(tier="strict", seats=1000)  # export: 10 a day + 10 %: the 12th unit is refused
    revoked = data_dir.issue(tier="unlimited")
    later = data_dir.issue(tier="unlimited")  # revoked after the backup
    bg_seats = data_dir.issue(tier="unlimited", seats=10**6)
    bg_quota = data_dir.issue(tier="strict", seats=10**6, quotas={"export": Quota(10**6, Period.DAY)})
    with data_dir.store() as store:
        store.set_status(revoked.license.license_id, Status.REVOKED)
    server = start(spawn, data_dir, env={"PORTCULLIS_AUDIT_ROTATE_S": "0.3"})
    creds = data_dir.service
    # Take the probe licenses close to their limits before the backup.
    primed = await _decide(server.url, creds, [{"license_key": seated.key, "feature": "view", "user_id": f"u{i}"}
                                               for i in range(4)]
                           + [{"license_key": metered.key, "feature": "export", "user_id": "m", "quantity": 1}] * 8)
    assert "deny" not in {d for d, _ in primed}

    stop, answered = asyncio.Event(), []
    load = [asyncio.create_task(_load(server.url, creds, (bg_seats.key, bg_quota.key), stop, answered))
            for _ in range(6)]
    while len(answered) < 200:
        await asyncio.sleep(0.05)
    backup_dir = tmp_path / "backup"
    began = time.monotonic_ns()
    code, out, err = await portcullis_async("backup", str(backup_dir), "--with-audit", "--data", str(data_dir.path),
                                            "--json")
    ended = time.monotonic_ns()
    stop.set()
    await asyncio.gather(*load)
    assert code == 0, err
    assert sum(began <= t <= ended for t in answered) > 0, "no check was answered while the backup ran"
    taken = json.loads(out)
    assert taken["with_audit"] and taken["audit_head"]["seq"] > 0 and "audit:" in err

    probes = ([{"license_key": seated.key, "feature": "view", "user_id": f"u{i}"} for i in (0, 4, 5, 6, 7)]
              + [{"license_key": metered.key, "feature": "export", "user_id": "m", "quantity": 1}] * 5
              + [{"license_key": metered.key, "feature": "view", "user_id": "m"},
                 {"license_key": revoked.key, "feature": "anything"},
                 {"license_key": later.key, "feature": "anything"},
                 {"license_key": "LK-" + "Z" * 29, "feature": "view"}])
    original = await _decide(server.url, creds, probes)
    assert {r for _, r in original} >= {"SEAT_LIMIT_EXCEEDED", "QUOTA_EXCEEDED", "LICENSE_REVOKED",
                                       "FEATURE_NOT_ENTITLED", "KEY_NOT_FOUND"}, original
    revoke = portcullis("license", "revoke", later.license.license_id, "--data", str(data_dir.path))
    assert revoke.returncode == 0, revoke.stderr
    assert server.stop() == 0

    restored = tmp_path / "restored"
    result = portcullis("restore", str(backup_dir), "--data", str(restored), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["audit_head"] == taken["audit_head"]
    again = start(spawn, SimpleNamespace(path=restored))
    replay = await _decide(again.url, creds, probes)
    later_again = await _decide(again.url, creds, [{"license_key": later.key, "feature": "anything"}])
    assert again.stop() == 0

    assert replay == original
    assert later_again == [("allow", "VALID")], "the registry is as of the backup: the later revocation is undone"
    assert _key_fps(restored, seated.license.license_id) == _key_fps(data_dir.path, seated.license.license_id)
    used = [_used(data / "portcullis.db", bg_quota.license.license_id) for data in (restored, data_dir.path)]
    assert 0 < used[0] < used[1], "the backup holds the units consumed before it, and not those after"
    head = taken["audit_head"]["sha256"]
    for data in (restored, data_dir.path):  # the restored trail, extended by its gateway, and the original
        verify = portcullis("audit", "verify", "--expect-head", head, "--data", str(data))
        assert verify.returncode == 0, verify.stdout


@pytest.fixture
def backup(data_dir, tmp_path) -> Path:
    """A backup (with the audit history) of a data directory holding one license."""
    data_dir.issue(tier="basic")
    target = tmp_path / "backup"
    result = portcullis("backup", str(target), "--with-audit", "--data", str(data_dir.path))
    assert result.returncode == 0, result.stderr
    return target


def test_backup_and_restored_keys_are_private(backup, tmp_path):
    restored = tmp_path / "restored"
    assert portcullis("restore", str(backup), "--data", str(restored)).returncode == 0
    for root in (backup, restored):
        keys = sorted((root / "keys").iterdir())
        assert keys and mode(root / "keys") == 0o700 and mode(root) == 0o700
        assert all(mode(key) == 0o600 for key in keys), [(key.name, oct(mode(key))) for key in keys]
    assert {p.name for p in (backup / "keys").iterdir()} == {p.name for p in (restored / "keys").iterdir()}
    assert mode(backup / "backup.json") == 0o600 and mode(restored / "portcullis.db") == 0o600


def test_the_listeners_tls_material_is_backed_up_and_restored(data_dir, tmp_path):
    data = data_dir.settings.data_dir
    assert portcullis("init", "--server-cert", "gateway", "--data", str(data)).returncode == 0
    backup, restored = tmp_path / "backup", tmp_path / "restored"
    assert portcullis("backup", str(backup), "--data", str(data)).returncode == 0
    assert portcullis("restore", str(backup), "--data", str(restored)).returncode == 0
    names = sorted(p.name for p in (data / "tls").iterdir() if p.is_file())
    assert names == sorted(p.name for p in (restored / "tls").iterdir() if p.is_file()) and "server.key" in names
    assert all((restored / "tls" / n).read_bytes() == (data / "tls" / n).read_bytes() for n in names)
    assert mode(restored / "tls" / "server.key") == 0o600 and mode(restored / "tls") == 0o700


@pytest.mark.parametrize("damage,needle", [
    (lambda b: (b / "keys" / "fingerprint.secret").write_text("0" * 64), "keys/fingerprint.secret: SHA-256"),
    (lambda b: (b / "policy.toml").write_bytes((b / "policy.toml").read_bytes()[:-1]), "policy.toml has"),
    (lambda b: (b / "portcullis.db").unlink(), "portcullis.db is missing"),
    (lambda b: (b / "keys" / "planted.pem").write_text("x"), "keys/planted.pem is not listed"),
    (lambda b: (b / "backup.json").write_text('{"format": 1, "files": {"../escape": {"sha256": "", "size": 0}}}'),
     "backup.json is damaged"),
    (lambda b: (b / "backup.json").unlink(), "not a backup"),
])
def test_a_damaged_backup_is_refused_in_one_line_and_nothing_is_restored(backup, tmp_path, damage, needle):
    damage(backup)
    restored = tmp_path / "restored"
    one_line_error(portcullis("restore", str(backup), "--data", str(restored)), needle)
    assert not restored.exists()
    one_line_error(portcullis("restore", str(backup), "--check"), needle)


def test_restore_check_passes_an_intact_backup(backup):
    result = portcullis("restore", str(backup), "--check", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["ok"] is True


def test_restore_refuses_a_non_empty_target_unless_told_and_then_keeps_what_was_there(backup, data_dir):
    before = data_dir.settings.callers_path.read_bytes()
    data_dir.settings.callers_path.write_text("# changed after the backup\n")
    one_line_error(portcullis("restore", str(backup), "--data", str(data_dir.path)), "is not empty", "--overwrite")
    assert data_dir.settings.callers_path.read_text() == "# changed after the backup\n"
    result = portcullis("restore", str(backup), "--data", str(data_dir.path), "--overwrite", "--json")
    assert result.returncode == 0, result.stderr
    aside = Path(json.loads(result.stdout)["moved_aside"])
    assert data_dir.settings.callers_path.read_bytes() == before
    assert (aside / "callers.toml").read_text() == "# changed after the backup\n"
    assert {"portcullis.db", "keys", "snapshots"} <= {p.name for p in aside.iterdir()}
    assert not list(data_dir.path.glob(".restore-*")), "the staging directory is left behind"


def test_restore_refuses_a_data_directory_a_gateway_serves_even_with_overwrite(backup, data_dir, spawn):
    server = spawn(data_dir.path)
    one_line_error(portcullis("restore", str(backup), "--data", str(data_dir.path), "--overwrite"),
                   "a gateway is running on")
    assert server.stop() == 0


def test_backup_refuses_a_non_empty_directory(backup, data_dir):
    one_line_error(portcullis("backup", str(backup), "--data", str(data_dir.path)), "is not an empty directory")
    assert portcullis("restore", str(backup), "--check").returncode == 0, "the earlier backup was touched"


def test_a_compaction_during_the_backup_sends_it_back_to_the_manifest(data_dir, tmp_path):
    settings = data_dir.settings
    manifest = Manifest(settings.audit_dir, audit_key(settings.keys_dir))
    for hour in (0, 1):
        for n in range(3):
            add_file(settings.audit_dir, manifest, hour, f"f{n}")
    compactions = []

    def progress(message: str) -> None:
        # While the second hour is about to be copied, both hours are merged: the first hour's
        # copied files are superseded and the second hour's are gone.
        if "hour=13" in message and not compactions:
            compactions.append(compact(settings.audit_dir, audit_key(settings.keys_dir),
                                       now=datetime.now(timezone.utc), grace=timedelta(0)))

    taken = take(settings, tmp_path / "backup", with_audit=True, progress=progress)
    assert [m.partition for m in compactions[0]] == ["date=2026-01-01/hour=12", "date=2026-01-01/hour=13"]
    parquet = sorted(rel for rel in taken["files"] if rel.endswith(".parquet"))
    assert len(parquet) == 2 and not any("/f" in rel for rel in parquet), parquet
    assert taken["audit_head"]["sha256"] == manifest.head().sha256
    restored = tmp_path / "restored"
    assert portcullis("restore", str(tmp_path / "backup"), "--data", str(restored)).returncode == 0
    verify = portcullis("audit", "verify", "--data", str(restored))
    assert verify.returncode == 0 and "2 files, 18 rows" in verify.stdout, verify.stdout


def test_a_backup_rewritten_to_match_is_caught_by_the_recorded_sha256(data_dir, tmp_path):
    target = tmp_path / "backup"
    taken = portcullis("backup", str(target), "--data", str(data_dir.path), "--json")
    recorded = json.loads(taken.stdout)["sha256"]
    assert recorded == hashlib.sha256((target / "backup.json").read_bytes()).hexdigest()
    assert portcullis("restore", str(target), "--check", "--expect-sha256", recorded).returncode == 0
    # Someone with write access to the backup plants a caller secret and fixes up backup.json.
    secrets = target / "keys" / "hmac_secrets.json"
    secrets.write_text(json.dumps({**json.loads(secrets.read_text()), "pk_planted": "ps_planted"}))
    manifest = json.loads((target / "backup.json").read_text())
    manifest["files"]["keys/hmac_secrets.json"] = {"sha256": hashlib.sha256(secrets.read_bytes()).hexdigest(),
                                                   "size": secrets.stat().st_size}
    (target / "backup.json").write_text(json.dumps(manifest))
    assert portcullis("restore", str(target), "--check").returncode == 0, "checksums alone cannot see this"
    restored = tmp_path / "restored"
    one_line_error(portcullis("restore", str(target), "--data", str(restored), "--expect-sha256", recorded),
                   "does not have the SHA-256 recorded")
    assert not restored.exists()


@pytest.mark.parametrize("remove,needle", [("policy.toml", "is this a data directory"),
                                           ("portcullis.db", "no portcullis.db in")])
def test_backup_of_an_incomplete_data_directory_is_one_line_and_leaves_nothing(data_dir, tmp_path, remove, needle):
    (data_dir.path / remove).unlink()
    target = tmp_path / "backup"
    one_line_error(portcullis("backup", str(target), "--data", str(data_dir.path)), needle)
    assert not target.exists()
