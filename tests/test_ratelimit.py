"""The token buckets behind per-caller limits and per-address failed-auth limits."""
from __future__ import annotations

from gateway.ratelimit import RateLimiter


def test_a_burst_of_rate_then_one_token_per_interval():
    limiter = RateLimiter()
    assert [limiter.allow("svc", 5, 100.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert limiter.allow("svc", 5, 100.1) is False  # half a token refilled
    assert limiter.allow("svc", 5, 100.2) is True
    assert limiter.allow("svc", 5, 100.2) is False


def test_a_bucket_never_holds_more_than_its_burst():
    limiter = RateLimiter()
    limiter.allow("svc", 2, 0.0)
    assert [limiter.allow("svc", 2, 3600.0) for _ in range(3)] == [True, True, False]


def test_rates_below_one_still_allow_one_request():
    limiter = RateLimiter()
    assert [limiter.allow("slow", 0.5, 0.0), limiter.allow("slow", 0.5, 1.0), limiter.allow("slow", 0.5, 2.0)] == \
        [True, False, True]


def test_zero_rate_is_unlimited():
    limiter = RateLimiter()
    assert all(limiter.allow("admin", 0, 0.0) for _ in range(1000))
    assert not limiter.exhausted("admin", 0, 0.0)


def test_exhausted_looks_without_taking():
    limiter = RateLimiter()
    assert not limiter.exhausted("10.0.0.7", 2, 0.0)  # unknown: nothing to look at, nothing stored
    assert len(limiter) == 0
    limiter.allow("10.0.0.7", 2, 0.0)
    assert not limiter.exhausted("10.0.0.7", 2, 0.0)
    assert not limiter.exhausted("10.0.0.7", 2, 0.0)  # looking twice takes nothing
    limiter.allow("10.0.0.7", 2, 0.0)
    assert limiter.exhausted("10.0.0.7", 2, 0.0)
    assert not limiter.exhausted("10.0.0.7", 2, 0.5)


def test_a_flood_of_distinct_keys_keeps_memory_bounded():
    limiter = RateLimiter(max_keys=100)
    for i in range(1000):
        limiter.allow(f"10.0.{i // 256}.{i % 256}", 1, 0.0)
    assert len(limiter) <= 100
    assert limiter.exhausted("10.0.3.231", 1, 0.0)  # the newest are kept
