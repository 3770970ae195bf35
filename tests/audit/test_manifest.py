from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.manifest import GENESIS, Manifest, ManifestError, line_hash, verify
from tests.audit.conftest import add_file

HOST = "gw1"


@pytest.fixture
def trail(tmp_path: Path, key: Ed25519PrivateKey) -> tuple[Path, list[str]]:
    audit = tmp_path / "audit"
    manifest = Manifest(audit, key, HOST)
    return audit, [add_file(audit, manifest, hour, f"w0-{n}") for n, hour in enumerate((0, 0, 1, 2))]


def _problems(audit: Path, key: Ed25519PrivateKey, **options: object) -> list[tuple[str, str]]:
    return [(p.kind, p.path) for p in verify(audit, key.public_key(), **options).problems]


def test_an_intact_trail_verifies(trail, key) -> None:
    audit, _ = trail
    report = verify(audit, key.public_key())
    assert report.ok and report.entries == 4 and report.files == 4 and report.rows == 12
    entries = list(Manifest(audit, host=HOST).entries())
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    assert entries[0].prev == GENESIS
    lines = Manifest(audit, host=HOST).path.read_bytes().splitlines()
    assert entries[3].prev == line_hash(lines[2])
    assert report.chains[0].head.seq == 4 and report.chains[0].head.sha256 == line_hash(lines[3]) == Manifest(audit, host=HOST).head().sha256


def test_a_modified_file_is_named(trail, key) -> None:
    audit, paths = trail
    with open(audit / paths[1], "r+b") as f:
        f.seek(100)
        f.write(b"\x00")
    assert _problems(audit, key) == [("modified", paths[1])]


def test_a_missing_file_is_named(trail, key) -> None:
    audit, paths = trail
    (audit / paths[2]).unlink()
    assert _problems(audit, key) == [("missing", paths[2])]


def test_an_unlisted_file_is_named(trail, key) -> None:
    audit, paths = trail
    extra = "date=2026-01-01/hour=12/intruder.parquet"
    (audit / extra).write_bytes((audit / paths[0]).read_bytes())
    assert _problems(audit, key) == [("unlisted", extra)]


def test_swapped_files_are_named_as_reordered(trail, key) -> None:
    audit, paths = trail
    first, third = (audit / paths[0]).read_bytes(), (audit / paths[2]).read_bytes()
    (audit / paths[0]).write_bytes(third)
    (audit / paths[2]).write_bytes(first)
    report = verify(audit, key.public_key())
    assert [(p.kind, p.path) for p in report.problems] == [("reordered", paths[0]), ("reordered", paths[2])]
    assert paths[2] in report.problems[0].detail


def test_reordered_or_removed_manifest_lines_are_named(trail, key) -> None:
    audit, paths = trail
    manifest = Manifest(audit, host=HOST).path
    lines = manifest.read_bytes().splitlines(keepends=True)
    manifest.write_bytes(lines[0] + lines[2] + lines[1] + lines[3])
    problems = _problems(audit, key)
    assert ("reordered", paths[2]) in problems and ("reordered", paths[1]) in problems
    manifest.write_bytes(lines[0] + lines[2] + lines[3])
    (audit / paths[1]).unlink()
    assert _problems(audit, key) == [("reordered", paths[2])]


def test_an_edited_entry_breaks_its_signature(trail, key) -> None:
    audit, paths = trail
    manifest = Manifest(audit, host=HOST).path
    manifest.write_bytes(manifest.read_bytes().replace(b'"rows":3', b'"rows":4', 1))
    problems = _problems(audit, key)
    assert ("signature", paths[0]) in problems and ("chain", paths[1]) in problems


def test_a_different_key_fails_every_signature(trail) -> None:
    audit, paths = trail
    assert _problems(audit, Ed25519PrivateKey.generate()) == [("signature", p) for p in paths]


def test_a_recorded_head_exposes_a_chain_cut_short(trail, key) -> None:
    audit, paths = trail
    head = Manifest(audit, host=HOST).head().sha256
    assert verify(audit, key.public_key(), expect_heads=[(None, head)]).ok
    manifest = Manifest(audit, host=HOST).path
    manifest.write_bytes(b"".join(manifest.read_bytes().splitlines(keepends=True)[:3]))
    (audit / paths[3]).unlink()
    assert verify(audit, key.public_key()).ok, "without the head, a truncated chain looks whole"
    assert _problems(audit, key, expect_heads=[(None, head)]) == [("head", "chains")]
    assert _problems(audit, key, expect_heads=[(HOST, head)]) == [("head", "_manifest/gw1.jsonl")]


def test_a_torn_last_line_is_reported_then_cut_by_the_next_append(trail, key) -> None:
    audit, _ = trail
    manifest = Manifest(audit, key, HOST)
    with open(manifest.path, "ab") as f:
        f.write(b'{"seq":5,"path":"date=')
    assert ("chain", "_manifest/gw1.jsonl") in _problems(audit, key)
    add_file(audit, manifest, 3, "w0-late")
    report = verify(audit, key.public_key())
    assert report.ok and report.chains[0].head.seq == 5


def test_an_unparseable_last_line_stops_appends(trail, key) -> None:
    audit, _ = trail
    manifest = Manifest(audit, key, HOST)
    with open(manifest.path, "ab") as f:
        f.write(b"garbage\n")
    with pytest.raises(ManifestError, match="audit verify"):
        manifest.append(path="x", sha256="0", rows=0, min_ts=0, max_ts=0)


def test_a_manifest_without_key_is_read_only(trail) -> None:
    audit, _ = trail
    with pytest.raises(ValueError, match="read-only"):
        Manifest(audit, host=HOST).append(path="x", sha256="0", rows=0, min_ts=0, max_ts=0)


def _append_many(audit: str, key_bytes: bytes, worker: int, count: int) -> None:
    key = Ed25519PrivateKey.from_private_bytes(key_bytes)
    manifest = Manifest(Path(audit), key, HOST)
    for i in range(count):
        add_file(Path(audit), manifest, i % 3, f"p{worker}-{i}", rows=1)


def test_processes_appending_together_keep_one_chain(tmp_path: Path, key) -> None:
    audit = tmp_path / "audit"
    audit.mkdir()
    raw = key.private_bytes_raw()
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(str(audit), raw, w, 15)) for w in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    report = verify(audit, key.public_key())
    assert report.ok, report.problems
    assert report.entries == 60 and report.chains[0].head.seq == 60
