"""The replay window: a nonce passes once within it and is forgotten after it, in memory (at a
bounded number of bytes), through a single worker's journal across restarts, and in the registry
the workers share."""
from __future__ import annotations

import secrets
import tracemalloc

from gateway.auth import NonceCache
from gateway.nonce_journal import JournaledNonces, read_journal
from gateway.registry.nonces import SqliteNonces


def test_a_nonce_passes_once_within_the_window_and_is_forgotten_after_it():
    cache = NonceCache(window_s=300)
    nonce = secrets.token_urlsafe(18)
    assert cache.add(nonce, 1000.0) is True
    assert cache.add(nonce, 1000.0) is False
    assert cache.add(nonce, 1000.0 + 600) is False  # a request stamped 1300 is still valid at 1600
    assert cache.add("another-nonce-1234", 1000.5) is True
    assert cache.add(secrets.token_urlsafe(18), 1000.0 + 602) is True  # expires what is out of reach
    assert len(cache) == 1
    assert cache.add(nonce, 1000.0 + 602) is True  # no request carrying it could pass any more


def test_a_clock_going_back_keeps_nonces_longer_never_shorter():
    cache = NonceCache(window_s=10)
    assert cache.add("nonce-from-the-future", 100.0)
    assert cache.add("nonce-after-a-clock-step", 50.0)
    assert not cache.add("nonce-after-a-clock-step", 60.0)
    assert not cache.add("nonce-from-the-future", 115.0)


def test_memory_per_nonce_is_bounded():
    cache = NonceCache(window_s=300)
    nonces = [secrets.token_urlsafe(18) for _ in range(50_000)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i, nonce in enumerate(nonces):
        cache.add(nonce, 1000.0 + i / 5000)  # 5,000 requests/s
    per_entry = (tracemalloc.get_traced_memory()[0] - before) / len(nonces)
    tracemalloc.stop()
    assert per_entry < 100, f"{per_entry:.0f} bytes per nonce"


def test_the_journal_keeps_the_window_across_a_restart(tmp_path):
    journal = tmp_path / "nonces"
    first = JournaledNonces(journal, window_s=300, now=1000.0)
    kept, other = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    assert first.add(kept, 1000.0) and first.add(other, 1100.0)
    del first  # no close: a killed process leaves only what write(2) handed to the kernel
    again = JournaledNonces(journal, window_s=300, now=1500.0)
    assert not again.add(kept, 1500.0) and not again.add(other, 1600.0)
    assert again.add(kept, 1602.0)  # expired: no request carrying it could pass any more
    again.close()
    assert len(JournaledNonces(journal, window_s=300, now=1702.0)) == 1  # `kept`, taken again at 1602


def test_a_line_cut_short_by_a_crash_does_no_harm(tmp_path):
    journal = tmp_path / "nonces"
    nonces = JournaledNonces(journal, window_s=300, now=1000.0)
    assert nonces.add("whole-nonce-0000000", 1000.0)
    nonces.close()
    [segment] = journal.glob("*.nonces")
    with segment.open("ab") as f:
        f.write(b"1601 half-a-no")  # the machine died in the middle of a write: no newline
    assert [nonce for nonce, _ in read_journal(journal, 300, 1000.0)] == ["whole-nonce-0000000", "half-a-no"]
    with segment.open("ab") as f:
        f.write(b"16")
    assert [nonce for nonce, _ in read_journal(journal, 300, 1000.0)] == ["whole-nonce-0000000", "half-a-no16"]
    segment.write_bytes(segment.read_bytes() + b"\n9x garbage\n")
    assert len(list(read_journal(journal, 300, 1000.0))) == 2


def test_journal_segments_go_once_everything_in_them_expired(tmp_path):
    journal = tmp_path / "nonces"
    nonces = JournaledNonces(journal, window_s=10, now=1000.0)  # a segment takes 21 s of nonces
    for second in range(1000, 1100):
        assert nonces.add(f"nonce-{second:0>12}", float(second))
    nonces.close()
    # A segment opened at S takes nonces until S + 21, which expire by S + 42: when the one of
    # 1084 opens, those of 1000, 1021 and 1042 (its last nonce expired at 1083) go.
    assert sorted(int(p.stem) for p in journal.glob("*.nonces")) == [1063, 1084]
    assert {n for n, _ in read_journal(journal, 10, 1099.0)} == {f"nonce-{s:0>12}" for s in range(1079, 1100)}


def test_the_registry_keeps_a_nonce_to_the_end_of_its_window_and_trades_them_with_the_journal(tmp_path):
    shared = SqliteNonces(tmp_path / "registry.db", window_s=300)
    assert shared.add("seen-by-the-workers-0", 1000.0)
    assert not shared.add("seen-by-the-workers-0", 1600.0)  # a request stamped 1300 still passes at 1600
    shared.absorb([("seen-by-one-worker-00", 1601)])
    assert not shared.add("seen-by-one-worker-00", 1300.0)
    assert sorted(shared.unexpired(1000.0)) == [("seen-by-one-worker-00", 1602), ("seen-by-the-workers-0", 1602)]
    shared.close()
    again = SqliteNonces(tmp_path / "registry.db", window_s=300)
    single = JournaledNonces(tmp_path / "nonces", 300, 1001.0, again.unexpired(1001.0))
    assert not single.add("seen-by-the-workers-0", 1001.0) and not single.add("seen-by-one-worker-00", 1001.0)
    again.close()
