"""Token buckets keyed by caller or remote address: O(1) per request, bounded memory."""
from __future__ import annotations


class RateLimiter:
    """``rate`` tokens per second, bursts up to ``burst``; idle buckets are forgotten."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)
        self._max_keys = max_keys

    def _tokens(self, key: str, rate: float, burst: float, now: float) -> float:
        tokens, last = self._buckets.get(key, (burst, now))
        return min(burst, tokens + (now - last) * rate)

    def allow(self, key: str, rate: float, now: float, burst: float | None = None) -> bool:
        """Take one token; False when the bucket is empty. ``rate <= 0`` means unlimited."""
        if rate <= 0:
            return True
        burst = burst if burst is not None else max(rate, 1.0)
        tokens = self._tokens(key, rate, burst, now)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._remember(key, (tokens - 1.0, now))
        return True

    def exhausted(self, key: str, rate: float, now: float, burst: float | None = None) -> bool:
        """Whether the bucket is empty, without taking a token (checked before costly work)."""
        if rate <= 0 or key not in self._buckets:
            return False
        return self._tokens(key, rate, burst if burst is not None else max(rate, 1.0), now) < 1.0

    def _remember(self, key: str, state: tuple[float, float]) -> None:
        if key not in self._buckets and len(self._buckets) >= self._max_keys:
            # Drop the oldest-inserted half: a flood of distinct keys cannot grow memory without bound.
            for stale in list(self._buckets)[: self._max_keys // 2]:
                del self._buckets[stale]
        self._buckets[key] = state
