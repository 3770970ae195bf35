"""Manifest chains: tamper evidence for the Parquet history (SPEC §5, §11).

One canonical JSON line per Parquet file added, per file that replaces others after
compaction, or per day pruned by retention: ``seq``, ``path`` (relative to the audit
directory), ``sha256``, ``rows``, ``min_ts``/``max_ts``, ``prev`` (SHA-256 of the previous line,
so lines cannot be edited, dropped or reordered unnoticed) and ``sig``, an Ed25519 signature by
the host's audit key over the rest. The SHA-256 of the last line is the chain head: kept outside
the gateway, it also exposes a chain cut short or re-signed by someone holding the key.

Each host keeps its own chain, ``_manifest/<host>.jsonl`` (:mod:`gateway.audit.hosts`), and only
ever appends to it, so hosts sharing one audit directory share no file and no lock. The workers
of one host share its chain: appends hold an ``fcntl`` lock on it and read the last line under
it. A trail written before chains were per host has one chain, ``_manifest.jsonl``; the first
host to write adopts it (renames it to its own chain, every line unchanged) if no file it lists
is named after another host (:meth:`Manifest.ensure`). Until then, or when it lists several
hosts' files, it is verified as a chain of its own.
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from gateway.audit.hosts import CHAINS_DIR, LEGACY_NAME, check_host, host_of_file, is_host
from gateway.audit.segment import fsync_dir, make_dirs

log = logging.getLogger(__name__)

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
    replaces: tuple[str, ...] = ()  # compaction: the files this one replaces
    sig: str = ""
    pruned: tuple[str, ...] = ()  # retention: the files of the day ``path`` (date=YYYY-MM-DD) removed

    def _fields(self) -> dict:
        fields = asdict(self)
        del fields["sig"]
        for name in ("replaces", "pruned"):  # only compaction and pruning entries carry them
            if fields[name]:
                fields[name] = list(fields[name])
            else:
                del fields[name]
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
            entry = cls(**{**obj, "replaces": tuple(obj.get("replaces", ())), "pruned": tuple(obj.get("pruned", ()))})
        except (TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a manifest entry: {exc}") from None
        if not (isinstance(entry.seq, int) and isinstance(entry.path, str) and isinstance(entry.sha256, str)
                and all(isinstance(p, str) for p in entry.replaces + entry.pruned)):
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


def apply(entry: Entry, live: dict[str, Entry], gone: dict[str, Entry]) -> None:
    """Fold one entry into the files that make up the history (``live``) and those that compaction
    or pruning took out of it (``gone``, with the entry that did)."""
    for path in entry.replaces + entry.pruned:
        live.pop(path, None)
        gone[path] = entry
    if not entry.pruned:
        live[entry.path] = entry
        gone.pop(entry.path, None)


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
    """One host's chain (``host``), or with ``host=""`` the single chain of a trail written
    before chains were per host."""

    def __init__(self, audit_dir: Path, signing_key: Ed25519PrivateKey | None = None, host: str = "") -> None:
        self.audit_dir = audit_dir
        self.host = check_host(host) if host else ""
        self.path = audit_dir / CHAINS_DIR / f"{host}.jsonl" if host else audit_dir / LEGACY_NAME
        # Held by compaction and pruning (one run at a time per chain) and while a chain is created.
        self.lock_path = audit_dir / CHAINS_DIR / f"{host}.lock" if host else audit_dir / "_compact.lock"
        self._key = signing_key

    @contextmanager
    def locked(self) -> Iterator[None]:
        """This chain's maintenance lock (a host's own processes only: never shared between hosts)."""
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, even on a crash
            yield

    def ensure(self) -> None:
        """Create this host's chain, adopting the single chain of an older trail if it is this
        host's: a rename, so every line, signature and head stays as it was."""
        if not self.host or self.path.exists():
            return
        make_dirs(self.path.parent)
        with self.locked():
            if self.path.exists():
                return
            legacy = self.audit_dir / LEGACY_NAME
            if legacy.exists() and legacy_hosts(legacy) <= {self.host}:
                try:
                    os.rename(legacy, self.path)  # atomic: of two hosts, one adopts it
                except FileNotFoundError:
                    pass
                else:
                    log.info("audit manifest %s adopted as host %s's chain %s", legacy, self.host, self.path)
            if not self.path.exists():
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o666))  # the umask decides (filemodes)
            fsync_dir(self.path.parent)
            fsync_dir(self.audit_dir)

    def append(self, *, path: str, sha256: str, rows: int, min_ts: int, max_ts: int,
               replaces: Iterable[str] = (), pruned: Iterable[str] = ()) -> Entry:
        """Sign and durably append one entry; ``min_ts``/``max_ts`` in microseconds since the epoch."""
        if self._key is None:
            raise ValueError("this manifest was opened without the audit key: it is read-only")
        self.ensure()
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
                          tuple(replaces), pruned=tuple(pruned)).signed(self._key)
            f.seek(0, os.SEEK_END)
            f.write(entry.line() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        if created:
            fsync_dir(self.path.parent)
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
        """Whether any entry ever added ``path`` (a scan: only used when replaying after a crash);
        an older trail's single chain counts too, adopted or not."""
        needle = b'"path":' + json.dumps(path).encode()
        legacy = Manifest(self.audit_dir) if self.host else None
        return any(needle in line for chain in (self, legacy) if chain for line in chain.lines())

    def head(self) -> Head | None:
        if not self.path.exists():
            return None
        with open(self.path, "rb") as f:
            last, _ = _tail(f)
        if last is None:
            return None
        entry = Entry.parse(last)
        return Head(entry.seq, line_hash(last), entry.path)


def legacy_hosts(path: Path) -> set[str]:
    """The hosts named by the files an older trail's single chain ever listed."""
    hosts = set()
    with open(path, "rb") as f:
        for line in f:
            try:
                entry = Entry.parse(line)
            except ValueError:
                continue
            for listed in (entry.path, *entry.replaces):
                host = host_of_file(listed.rsplit("/", 1)[-1])
                if host:
                    hosts.add(host)
    return hosts


def chains(audit_dir: Path) -> list[Manifest]:
    """Every chain in ``audit_dir``: each host's, then an older trail's single chain if present.
    A file whose name no host can have is no chain (what it would list shows as unlisted)."""
    found = [Manifest(audit_dir, host=path.stem) for path in sorted((audit_dir / CHAINS_DIR).glob("*.jsonl"))
             if is_host(path.stem)]
    legacy = Manifest(audit_dir)
    return found + ([legacy] if legacy.path.exists() else [])


@dataclass(frozen=True)
class Problem:
    kind: str  # modified | missing | unlisted | reordered | superseded | pruned | signature | key | chain | head
    path: str
    detail: str
    host: str = ""  # the chain's host, or the host a stray file's name names ("" when none)

    def __str__(self) -> str:
        return f"{self.kind.upper()} {self.path} ({_host_label(self.host)}): {self.detail}"


def _host_label(host: str) -> str:
    return "single chain _manifest.jsonl" if host == LEGACY_NAME else f"host {host}" if host else "no host"


@dataclass(frozen=True)
class Chain:
    """What verifying one chain found."""

    host: str  # LEGACY_NAME for an older trail's single chain
    entries: int
    files: int
    rows: int
    head: Head | None


@dataclass(frozen=True)
class Report:
    chains: tuple[Chain, ...]
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    entries = property(lambda self: sum(c.entries for c in self.chains))
    files = property(lambda self: sum(c.files for c in self.chains))
    rows = property(lambda self: sum(c.rows for c in self.chains))


@dataclass(frozen=True)
class Keys:
    """The audit public keys to verify with: ``hosts`` pinned per host, ``default`` for any other
    chain (this host's own key: by default every host has the same ``keys/``, SPEC §11)."""

    default: Ed25519PublicKey | None = None
    hosts: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)

    def of(self, host: str) -> Ed25519PublicKey | None:
        return self.hosts.get(host, self.default)


@dataclass
class _Chain:
    """One chain as read: the files it lists now, those it took out, the hash of each line."""

    name: str
    live: dict[str, Entry] = field(default_factory=dict)
    gone: dict[str, Entry] = field(default_factory=dict)
    hashes: list[str] = field(default_factory=list)
    head: Head | None = None


def _check_chain(manifest: Manifest, key: Ed25519PublicKey | None, problems: list[Problem]) -> _Chain:
    chain = _Chain(manifest.host or LEGACY_NAME)
    label = _chain_file(chain.name)

    def problem(kind: str, path: str, detail: str) -> None:
        problems.append(Problem(kind, path, detail, chain.name))

    if key is None:
        problem("key", label, f"no audit public key for host {chain.name}: pin it (`portcullis audit trust "
                f"{chain.name} ed25519:...`) or pass --public-key {chain.name}=ed25519:...; its signatures "
                "were not checked")
    prev, expected = GENESIS, 1
    for number, raw in enumerate(manifest.lines(), 1):
        where = f"line {number}"
        if not raw.endswith(b"\n"):
            problem("chain", label, f"{where} is torn (an append was interrupted)")
            break
        line = raw[:-1]
        try:
            entry = Entry.parse(line)
        except ValueError as exc:
            problem("chain", label, f"{where}: {exc}")
            prev, expected = line_hash(line), expected + 1
            continue
        where = f"{where} (seq {entry.seq})"
        if entry.seq != expected:
            problem("reordered", entry.path, f"{where} is out of sequence: expected seq {expected}; "
                    "manifest entries were reordered, removed or inserted")
        elif entry.prev != prev:
            problem("chain", entry.path, f"{where} does not chain to the line before it: "
                    "an earlier entry was edited, removed or reordered")
        if line != entry.line():
            problem("chain", entry.path, f"{where} was edited (not in canonical form)")
        if key is not None and not entry.signature_ok(key):
            problem("signature", entry.path, f"{where}: bad signature (not signed by the audit key of host {chain.name})")
        for path in entry.replaces + entry.pruned:
            if path not in chain.live:
                problem("chain", path, f"{where} {'prunes' if entry.pruned else 'replaces'} a file that is not "
                        "in this chain's history")
        apply(entry, chain.live, chain.gone)
        prev, expected = line_hash(line), entry.seq + 1
        chain.hashes.append(prev)
        chain.head = Head(entry.seq, prev, entry.path)
    return chain


def verify(audit_dir: Path, keys: Keys | Ed25519PublicKey,
           expect_heads: Iterable[tuple[str | None, str]] = ()) -> Report:
    """Check every chain, every signature and every file; name each problem and its host.

    ``keys``: one key for every chain, or :class:`Keys`. ``expect_heads``: heads recorded earlier
    outside the gateway, as (host, head), or (None, head) for a head of whichever chain holds it;
    the chain must contain it.
    """
    keys = keys if isinstance(keys, Keys) else Keys(keys)
    problems: list[Problem] = []
    read = [_check_chain(manifest, keys.of(manifest.host or LEGACY_NAME), problems) for manifest in chains(audit_dir)]
    listed: dict[str, _Chain] = {}
    for chain in read:
        for path in chain.live:
            if path in listed:
                problems.append(Problem("chain", path, f"also listed by the chain of {_host_label(listed[path].name)}: "
                                        "a host lists only its own files", chain.name))
            listed.setdefault(path, chain)
    owner = {entry.sha256: path for chain in read for path, entry in chain.live.items()}
    for path, chain in listed.items():
        entry = chain.live[path]
        file = audit_dir / path
        if not file.exists():
            problems.append(Problem("missing", path, f"listed at seq {entry.seq} but not on disk", chain.name))
            continue
        digest = sha256_file(file)
        if digest == entry.sha256:
            continue
        if digest in owner:
            problems.append(Problem("reordered", path, f"holds the content listed for {owner[digest]}", chain.name))
        else:
            problems.append(Problem("modified", path, f"SHA-256 {digest[:16]}... differs from the one listed "
                                    f"at seq {entry.seq} ({entry.sha256[:16]}...)", chain.name))
    gone = {path: (chain.name, entry) for chain in read for path, entry in chain.gone.items()}
    on_disk = sorted(p.relative_to(audit_dir).as_posix() for p in audit_dir.glob(PARQUET_GLOB))
    for path in on_disk:
        if path in listed:
            continue
        if path in gone:
            host, entry = gone[path]
            problems.append(Problem("pruned", path, f"pruned at seq {entry.seq} but still present; run "
                                    "`portcullis audit prune` on that host to finish", host) if entry.pruned else
                            Problem("superseded", path, "replaced by compaction but still present (its rows "
                                    "are counted twice); run `portcullis audit compact` on that host to finish", host))
        else:
            problems.append(Problem("unlisted", path, "in no host's manifest chain",
                                    host_of_file(path.rsplit("/", 1)[-1]) or ""))
    by_host = {chain.name: chain for chain in read}
    for host, expected in expect_heads:
        if host is None:
            if not any(expected in chain.hashes for chain in read):
                problems.append(Problem("head", "chains", f"no chain contains the recorded head {expected}: "
                                        "entries were removed or a chain was rewritten or removed"))
        elif host not in by_host:
            problems.append(Problem("head", _chain_file(host), f"no chain for host {host}, whose head {expected} "
                                    "was recorded: the chain was removed", host))
        elif expected not in by_host[host].hashes:
            problems.append(Problem("head", _chain_file(host), f"the chain does not contain the recorded head "
                                    f"{expected}: entries were removed or the chain was rewritten", host))
    return Report(tuple(Chain(c.name, len(c.hashes), len(c.live), sum(e.rows for e in c.live.values()), c.head)
                        for c in read), tuple(problems))


def _chain_file(host: str) -> str:
    return host if host == LEGACY_NAME else f"{CHAINS_DIR}/{host}.jsonl"
