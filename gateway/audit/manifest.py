"""The manifest chain ``_manifest.jsonl``: tamper evidence for the Parquet history (SPEC §5).

One canonical JSON line per Parquet file added, or per file that replaces others after
compaction: ``seq``, ``path`` (relative to the audit directory), ``sha256``, ``rows``,
``min_ts``/``max_ts``, ``prev`` (SHA-256 of the previous line, so lines cannot be edited, dropped
or reordered unnoticed) and ``sig``, an Ed25519 signature by the audit key over the rest. The
SHA-256 of the last line is the chain head: kept outside the gateway, it also exposes a chain
cut short or re-signed by someone holding the key.

Several worker processes share one audit directory, so appends hold an ``fcntl`` lock on the
manifest and read the current last line under it.
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from gateway.audit.segment import fsync_dir

log = logging.getLogger(__name__)

MANIFEST_NAME = "_manifest.jsonl"
PARQUET_GLOB = "date=*/hour=*/*.parquet"
GENESIS = "0" * 64  # the ``prev`` of the first entry
_DOMAIN = b"portcullis audit manifest v1\n"  # a manifest signature can never pass for another one
_BLOCK = 8192
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class ManifestError(Exception):
    """The manifest cannot be extended: its last line is not a valid entry."""


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def iso_us(micros: int) -> str:
    """Exact to the microsecond (no float on the way)."""
    return (_EPOCH + timedelta(microseconds=micros)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def line_hash(line: bytes) -> str:
    """Hash of one manifest line without its newline: the next entry's ``prev``, or the head."""
    return hashlib.sha256(line).hexdigest()


def _canonical(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Entry:
    seq: int
    path: str
    sha256: str
    rows: int
    min_ts: str
    max_ts: str
    prev: str
    replaces: tuple[str, ...] = ()
    sig: str = ""

    def _fields(self) -> dict:
        fields = asdict(self)
        del fields["sig"]
        if self.replaces:
            fields["replaces"] = list(self.replaces)
        else:
            del fields["replaces"]  # only compaction entries carry it
        return fields

    def body(self) -> bytes:
        """What is signed: every field but ``sig``."""
        return _canonical(self._fields())

    def line(self) -> bytes:
        return _canonical({**self._fields(), "sig": self.sig})

    @classmethod
    def parse(cls, line: bytes) -> Entry:
        try:
            obj = json.loads(line)
            entry = cls(**{**obj, "replaces": tuple(obj.get("replaces", ()))})
        except (TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a manifest entry: {exc}") from None
        if not (isinstance(entry.seq, int) and isinstance(entry.path, str) and isinstance(entry.sha256, str)
                and all(isinstance(p, str) for p in entry.replaces)):
            raise ValueError("not a manifest entry: wrong field types")
        return entry

    def signed(self, key: Ed25519PrivateKey) -> Entry:
        return replace(self, sig=base64.b64encode(key.sign(_DOMAIN + self.body())).decode())

    def signature_ok(self, key: Ed25519PublicKey) -> bool:
        try:
            key.verify(base64.b64decode(self.sig, validate=True), _DOMAIN + self.body())
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class Head:
    seq: int
    sha256: str  # of the last line
    path: str


def apply(entry: Entry, live: dict[str, Entry], replaced: set[str]) -> None:
    """Fold one entry into the set of files that make up the history (``live``)."""
    for path in entry.replaces:
        live.pop(path, None)
        replaced.add(path)
    live[entry.path] = entry
    replaced.discard(entry.path)


def _tail(f: IO[bytes]) -> tuple[bytes | None, int]:
    """The last complete line (without newline) and the size of the complete part of the file."""
    size = f.seek(0, os.SEEK_END)
    buf, pos = b"", size
    while pos > 0 and buf.count(b"\n") < 2:
        step = min(_BLOCK, pos)
        pos -= step
        f.seek(pos)
        buf = f.read(step) + buf
    end = buf.rfind(b"\n")
    if end < 0:
        return None, 0
    return buf[buf.rfind(b"\n", 0, end) + 1:end], pos + end + 1


class Manifest:
    def __init__(self, audit_dir: Path, signing_key: Ed25519PrivateKey | None = None) -> None:
        self.audit_dir = audit_dir
        self.path = audit_dir / MANIFEST_NAME
        self._key = signing_key

    def append(self, *, path: str, sha256: str, rows: int, min_ts: int, max_ts: int,
               replaces: Iterable[str] = ()) -> Entry:
        """Sign and durably append one entry; ``min_ts``/``max_ts`` in microseconds since the epoch."""
        if self._key is None:
            raise ValueError("this manifest was opened without the audit key: it is read-only")
        created = not self.path.exists()
        with open(self.path, "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, even on a crash
            last, complete = _tail(f)
            if complete < f.seek(0, os.SEEK_END):
                # An append cut short by a crash: its file is unlisted and its spool segment
                # undeleted, so replaying the segment lists it again.
                log.warning("audit manifest %s: cutting a torn last line at byte offset %d", self.path, complete)
                f.truncate(complete)
            try:
                seq, prev = (Entry.parse(last).seq + 1, line_hash(last)) if last else (1, GENESIS)
            except ValueError as exc:
                raise ManifestError(f"{self.path}: the last line cannot be extended ({exc}); "
                                    f"run `portcullis audit verify`") from None
            entry = Entry(seq, path, sha256, rows, iso_us(min_ts), iso_us(max_ts), prev,
                          tuple(replaces)).signed(self._key)
            f.seek(0, os.SEEK_END)
            f.write(entry.line() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        if created:
            fsync_dir(self.audit_dir)
        return entry

    def lines(self) -> Iterator[bytes]:
        """Raw lines with their newline (a torn last line has none)."""
        if self.path.exists():
            with open(self.path, "rb") as f:
                yield from f

    def entries(self) -> Iterator[Entry]:
        for line in self.lines():
            yield Entry.parse(line)

    def lists(self, path: str) -> bool:
        """Whether any entry ever added ``path`` (a scan: only used when replaying after a crash)."""
        needle = b'"path":' + json.dumps(path).encode()
        return any(needle in line for line in self.lines())

    def head(self) -> Head | None:
        if not self.path.exists():
            return None
        with open(self.path, "rb") as f:
            last, _ = _tail(f)
        if last is None:
            return None
        entry = Entry.parse(last)
        return Head(entry.seq, line_hash(last), entry.path)


@dataclass(frozen=True)
class Problem:
    kind: str  # modified | missing | unlisted | reordered | superseded | signature | chain | head
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind.upper()} {self.path}: {self.detail}"


@dataclass(frozen=True)
class Report:
    entries: int
    files: int
    rows: int
    head: Head | None
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_chain(manifest: Manifest, key: Ed25519PublicKey,
                 problems: list[Problem]) -> tuple[dict[str, Entry], set[str], list[str], Head | None]:
    live: dict[str, Entry] = {}
    replaced: set[str] = set()
    hashes: list[str] = []
    prev, head, expected = GENESIS, None, 1
    for number, raw in enumerate(manifest.lines(), 1):
        where = f"line {number}"
        if not raw.endswith(b"\n"):
            problems.append(Problem("chain", MANIFEST_NAME, f"{where} is torn (an append was interrupted)"))
            break
        line = raw[:-1]
        try:
            entry = Entry.parse(line)
        except ValueError as exc:
            problems.append(Problem("chain", MANIFEST_NAME, f"{where}: {exc}"))
            prev, expected = line_hash(line), expected + 1
            continue
        where = f"{where} (seq {entry.seq})"
        if entry.seq != expected:
            problems.append(Problem("reordered", entry.path, f"{where} is out of sequence: expected seq "
                                    f"{expected}; manifest entries were reordered, removed or inserted"))
        elif entry.prev != prev:
            problems.append(Problem("chain", entry.path, f"{where} does not chain to the line before it: "
                                    f"an earlier entry was edited, removed or reordered"))
        if line != entry.line():
            problems.append(Problem("chain", entry.path, f"{where} was edited (not in canonical form)"))
        if not entry.signature_ok(key):
            problems.append(Problem("signature", entry.path, f"{where}: bad signature (not signed by this audit key)"))
        for path in entry.replaces:
            if path not in live:
                problems.append(Problem("chain", path, f"{where} replaces a file that is not in the history"))
        apply(entry, live, replaced)
        prev, expected = line_hash(line), entry.seq + 1
        hashes.append(prev)
        head = Head(entry.seq, prev, entry.path)
    return live, replaced, hashes, head


def verify(audit_dir: Path, key: Ed25519PublicKey, expect_head: str | None = None) -> Report:
    """Check the chain, every signature and every file; name each problem found.

    ``expect_head`` is a head hash recorded earlier outside the gateway: the chain must contain it.
    """
    problems: list[Problem] = []
    live, replaced, hashes, head = _check_chain(Manifest(audit_dir), key, problems)
    owner = {entry.sha256: path for path, entry in live.items()}
    for path, entry in live.items():
        file = audit_dir / path
        if not file.exists():
            problems.append(Problem("missing", path, f"listed at seq {entry.seq} but not on disk"))
            continue
        digest = sha256_file(file)
        if digest == entry.sha256:
            continue
        if digest in owner:
            problems.append(Problem("reordered", path, f"holds the content listed for {owner[digest]}"))
        else:
            problems.append(Problem("modified", path, f"SHA-256 {digest[:16]}... differs from the one listed "
                                    f"at seq {entry.seq} ({entry.sha256[:16]}...)"))
    on_disk = sorted(p.relative_to(audit_dir).as_posix() for p in audit_dir.glob(PARQUET_GLOB))
    for path in on_disk:
        if path in replaced:
            problems.append(Problem("superseded", path, "replaced by compaction but still present (its rows are "
                                    "counted twice); run `portcullis audit compact` to finish"))
        elif path not in live:
            problems.append(Problem("unlisted", path, "not in the manifest"))
    if expect_head is not None and expect_head not in hashes:
        problems.append(Problem("head", MANIFEST_NAME, f"the chain does not contain the recorded head {expect_head}: "
                                "entries were removed or the chain was rewritten"))
    return Report(len(hashes), len(live), sum(e.rows for e in live.values()), head, tuple(problems))
