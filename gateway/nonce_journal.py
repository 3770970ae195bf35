"""One worker's replay window, kept across restarts: decided in memory, journaled to disk.

A single worker decides replays in memory (:class:`gateway.auth.NonceCache`, under a
microsecond), so a restart used to forget every nonce and a request captured before it could be
sent again after it. Here each nonce the cache accepts is also appended to a journal file, with
one ``write(2)`` before the answer leaves (a few microseconds); at start the nonces that could
still pass the timestamp check are read back. What ``write`` returned is in the kernel, so a
killed process (SIGKILL, a crash) loses nothing; only a crash of the machine itself can lose
the last moments (no fsync per request; see SECURITY.md).

Why not the registry's SQLite table, as ``--workers N`` must: a write transaction per request
costs 13 to 53 µs (``bench.nonces``: random keys, a page written per commit), against 2 to 6 µs
here, and it would put the default mode's nonces through the licenses' database file. Why not
refuse old timestamps after an unclean start instead: a capture made by a client whose clock
runs ahead would still pass, and honest clients whose clocks run behind would be refused for
minutes after every crash.

The journal is a directory of segment files, each named by the second it was opened and kept
for ``span`` (twice the skew window, plus a second) seconds of writes; a segment is deleted once
everything in it has expired.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

from gateway.auth import NonceCache

SUFFIX = ".nonces"


def span_s(window_s: int) -> int:
    """How long a nonce is kept: until no request carrying it can pass the timestamp check."""
    return 2 * window_s + 1


def read_journal(directory: Path, window_s: int, now: float) -> Iterator[tuple[str, int]]:
    """(nonce, second it expires) of every journaled nonce not expired at ``now``, oldest first.

    A line cut short (the machine crashed in the middle of a write) is skipped, or yields the
    start of a nonce, which no request carries: harmless either way."""
    span = span_s(window_s)
    for opened, path in _segments(directory):
        if opened + 2 * span <= now:  # everything in it has expired
            continue
        try:
            lines = path.read_bytes().splitlines()
        except FileNotFoundError:  # deleted meanwhile: expired
            continue
        for line in lines:
            expires, _, nonce = line.partition(b" ")
            if expires.isdigit() and nonce and int(expires) > now:
                yield nonce.decode("ascii", "replace"), int(expires)


def _segments(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for path in directory.glob(f"*{SUFFIX}"):
        if path.stem.isdigit():
            found.append((int(path.stem), path))
    return sorted(found)


class JournaledNonces:
    """Same contract as :class:`gateway.auth.NonceCache` (``add`` is False for a replay), and
    the nonces accepted before a restart are still refused after it."""

    def __init__(self, directory: Path, window_s: int, now: float, earlier: Iterable[tuple[str, int]] = ()) -> None:
        """Open the journal in ``directory``, taking back its unexpired nonces and ``earlier``
        ones (nonce, second it expires) remembered elsewhere (the registry, after ``--workers N``)."""
        self._dir = directory
        self._span = span_s(window_s)
        self._cache = NonceCache(window_s)
        directory.mkdir(parents=True, exist_ok=True)
        earlier = list(earlier)
        for nonce, expires in sorted([*read_journal(directory, window_s, now), *earlier], key=lambda e: e[1]):
            self._cache.restore(nonce, expires)
        self._fd = -1
        self._opened = 0
        self._rotate(now)
        if earlier:  # journaled here too, for the next restart
            os.write(self._fd, "".join(f"{expires} {nonce}\n" for nonce, expires in earlier).encode("ascii"))

    async def record(self, nonce: str, now: float) -> bool:
        return self.add(nonce, now)

    def add(self, nonce: str, now: float) -> bool:
        if not self._cache.add(nonce, now):
            return False
        if now >= self._opened + self._span:
            self._rotate(now)
        # The nonce is checked ([A-Za-z0-9_-]) before it gets here: one line, one write.
        os.write(self._fd, b"%d %s\n" % (int(now) + self._span, nonce.encode("ascii")))
        return True

    def _rotate(self, now: float) -> None:
        """Start a new segment; delete those whose every nonce has expired."""
        if self._fd >= 0:
            os.close(self._fd)
        self._opened = int(now)
        path = self._dir / f"{self._opened}{SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        for opened, old in _segments(self._dir):
            if opened + 2 * self._span <= now:
                old.unlink(missing_ok=True)

    def __len__(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
