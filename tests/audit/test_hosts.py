"""Several hosts in one audit directory: a chain per host, each verified with its host's key,
every problem named with its host; compaction keeps to its own host's files; an older trail's
single chain keeps verifying and is adopted by its host."""
from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.compact import compact
from gateway.audit.hosts import host_of_file, host_of_instance
from gateway.audit.manifest import Keys, Manifest, verify
from gateway.audit.parquet import convert_segment
from tests.audit.conftest import add_file, make_record, make_segment

LATER = datetime(2026, 1, 2, tzinfo=timezone.utc)


def name(host: str, n: int) -> str:
    """A file name as a worker of ``host`` gives it."""
    return f"{host}-w0-20260101T1200000000{n:02d}-a1b2c3"


@pytest.fixture
def keys() -> dict[str, Ed25519PrivateKey]:
    return {"gw-a": Ed25519PrivateKey.generate(), "gw-b": Ed25519PrivateKey.generate()}


@pytest.fixture
def trail(tmp_path: Path, keys) -> tuple[Path, dict[str, list[str]]]:
    """Two hosts, each with its own key, writing into the same hours of one directory."""
    audit = tmp_path / "audit"
    paths: dict[str, list[str]] = {}
    for host, key in keys.items():
        manifest = Manifest(audit, key, host)
        paths[host] = [add_file(audit, manifest, hour, name(host, n)) for n, hour in enumerate((0, 0, 1))]
    return audit, paths


def _pinned(keys) -> Keys:
    return Keys(hosts={host: key.public_key() for host, key in keys.items()})


def _problems(audit: Path, verify_keys: Keys) -> list[tuple[str, str, str]]:
    return [(p.kind, p.path, p.host) for p in verify(audit, verify_keys).problems]


def test_file_names_say_their_host() -> None:
    assert host_of_file(name("gw-a", 1) + ".parquet") == "gw-a"
    assert host_of_file("compact-gw-a-w1-0123456789abcdef.parquet") == "gw-a-w1"
    assert host_of_file("compact-0123456789abcdef.parquet") is None  # an older trail's merged file
    assert host_of_file("intruder.parquet") is None
    assert host_of_instance("gw-a-w12") == "gw-a" and host_of_instance("gw-a") == "gw-a"


def test_each_chain_verifies_with_its_hosts_key(trail, keys) -> None:
    audit, _ = trail
    report = verify(audit, _pinned(keys))
    assert report.ok, report.problems
    assert [(c.host, c.files, c.entries) for c in report.chains] == [("gw-a", 3, 3), ("gw-b", 3, 3)]
    assert sorted(p.name for p in (audit / "_manifest").iterdir()) == ["gw-a.jsonl", "gw-a.lock", "gw-b.jsonl",
                                                                       "gw-b.lock"]


def test_a_chain_signed_by_another_key_is_named_by_its_host(trail, keys) -> None:
    audit, paths = trail
    only_a = Keys(default=keys["gw-a"].public_key())  # gw-b's key neither pinned nor the same as this host's
    assert _problems(audit, only_a) == [("signature", path, "gw-b") for path in paths["gw-b"]]
    unpinned = Keys(hosts={"gw-a": keys["gw-a"].public_key()})
    assert _problems(audit, unpinned) == [("key", "_manifest/gw-b.jsonl", "gw-b")]


def test_every_file_problem_names_its_host(trail, keys) -> None:
    audit, paths = trail
    with open(audit / paths["gw-b"][0], "r+b") as f:
        f.seek(100)
        f.write(b"\x00")
    (audit / paths["gw-a"][2]).unlink()
    stray = f"date=2026-01-01/hour=12/{name('gw-b', 9)}.parquet"
    shutil.copy(audit / paths["gw-b"][1], audit / stray)
    assert sorted(_problems(audit, _pinned(keys))) == [
        ("missing", paths["gw-a"][2], "gw-a"), ("modified", paths["gw-b"][0], "gw-b"), ("unlisted", stray, "gw-b")]
    text = [str(p) for p in verify(audit, _pinned(keys)).problems]
    assert any(line.startswith(f"MODIFIED {paths['gw-b'][0]} (host gw-b): ") for line in text)


def test_a_file_listed_by_two_hosts_chains_is_reported(trail, keys) -> None:
    audit, paths = trail
    theirs = paths["gw-a"][0]
    entry = next(Manifest(audit, host="gw-a").entries())
    Manifest(audit, keys["gw-b"], "gw-b").append(path=theirs, sha256=entry.sha256, rows=entry.rows, min_ts=0, max_ts=0)
    assert _problems(audit, _pinned(keys)) == [("chain", theirs, "gw-b")]


def test_compaction_merges_only_its_own_hosts_files(trail, keys) -> None:
    audit, paths = trail
    hour = audit / "date=2026-01-01/hour=12"
    (merge,) = compact(audit, keys["gw-a"], now=LATER, grace=timedelta(0), host="gw-a")
    assert merge.files == 2 and Path(merge.path).name.startswith("compact-gw-a-")
    assert all((audit / path).exists() for path in paths["gw-b"]), "gw-b's files are gw-b's business"
    (theirs,) = compact(audit, keys["gw-b"], now=LATER, grace=timedelta(0), host="gw-b")
    assert Path(theirs.path).name.startswith("compact-gw-b-")
    assert sorted(host_of_file(p.name) for p in hour.glob("*.parquet")) == ["gw-a", "gw-b"]
    report = verify(audit, _pinned(keys))
    assert report.ok and report.rows == 18, report.problems


def single_chain_trail(audit: Path, key: Ed25519PrivateKey) -> None:
    """A trail as the version before per-host chains left it: one ``_manifest.jsonl`` for the
    host "old", two files merged by compaction, then one more (written now, in that layout)."""
    older = Manifest(audit, key)
    for n in range(2):
        add_file(audit, older, 0, name("old", n), rows=5)
    assert compact(audit, key, now=LATER, grace=timedelta(0))
    add_file(audit, older, 0, name("old", 2), rows=3)


def test_the_single_chain_of_an_older_trail_keeps_verifying_then_its_host_adopts_it(tmp_path, key) -> None:
    audit = tmp_path / "audit"
    single_chain_trail(audit, key)
    assert (audit / "_manifest.jsonl").is_file() and not (audit / "_manifest").exists(), "one chain, no host's"
    public = key.public_key()
    before = verify(audit, public)
    assert before.ok, before.problems
    assert [(c.host, c.files, c.rows, c.entries) for c in before.chains] == [("_manifest.jsonl", 2, 13, 4)]

    Manifest(audit, host="gw-new").ensure()  # another host: it lists files of host "old" only
    assert (audit / "_manifest.jsonl").exists() and verify(audit, public).ok
    Manifest(audit, host="old").ensure()  # the host that wrote it, upgraded
    assert not (audit / "_manifest.jsonl").exists()
    after = verify(audit, Keys(hosts={"old": public}, default=Ed25519PrivateKey.generate().public_key()))
    assert after.ok, after.problems
    assert [(c.host, c.head) for c in after.chains if c.entries] == [("old", before.chains[0].head)]


def test_a_host_continues_its_older_single_chain(tmp_path, key) -> None:
    audit = tmp_path / "audit"
    older = [add_file(audit, Manifest(audit, key), 0, name("gw-a", n)) for n in range(2)]
    newer = add_file(audit, Manifest(audit, key, "gw-a"), 1, name("gw-a", 5))
    entries = list(Manifest(audit, host="gw-a").entries())
    assert [(e.seq, e.path) for e in entries] == [(1, older[0]), (2, older[1]), (3, newer)]
    report = verify(audit, key.public_key())
    assert report.ok and [c.host for c in report.chains] == ["gw-a"], report.problems


async def test_a_segment_replayed_after_the_upgrade_is_not_listed_twice(tmp_path, key) -> None:
    """Converted and listed in the older single chain, but the crash left its segment: the
    upgraded host replays it and finds it listed there."""
    audit = tmp_path / "audit"
    segment = await make_segment(tmp_path / "spool", [[make_record(i, instance="gw-a-w0") for i in range(5)]])
    left_behind = segment.read_bytes()
    (path,) = convert_segment(segment, audit, "gw-a-w0", Manifest(audit, key))
    segment.write_bytes(left_behind)
    assert convert_segment(segment, audit, "gw-a-w0", Manifest(audit, key, "gw-a"), replay=True) == []
    add_file(audit, Manifest(audit, key, "gw-a"), 1, name("gw-a", 1))  # the host goes on writing
    assert [e.path for e in Manifest(audit, host="gw-a").entries()].count(path) == 1
    report = verify(audit, key.public_key())
    assert report.ok and report.rows == 8, report.problems
