"""The in-process replay cache: a nonce passes once within the window, is forgotten after it,
and costs a bounded number of bytes."""
from __future__ import annotations

import secrets
import tracemalloc

from gateway.auth import NonceCache


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
