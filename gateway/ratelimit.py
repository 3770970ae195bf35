"""Token buckets keyed by caller or remote address: O(1) per request, bounded memory."""
from __future__ import annotations


class RateLimiter:
    """``rate`` tokens per second per key, bursts up to ``max(rate, 1)``; ``rate <= 0`` is unlimited.

    Every authenticated request passes here, so a bucket is a two-item list updated in place (no
    allocation per request once a key is known). A flood of distinct keys cannot grow memory
    without bound: past ``max_keys``, the oldest-inserted half is forgotten.
    """

    def __init__(self, max_keys: int = 100_000) -> None:
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, last refill]
        self._max_keys = max_keys

    def allow(self, key: str, rate: float, now: float, cost: int = 1) -> bool:
        """Take ``cost`` tokens (one per check a request asks); False, taking none, when fewer
        are left. A cost above the burst is never allowed: a batch may not outrun the rate."""
        if rate <= 0:
            return True
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = [max(rate, 1.0), now]
            self._add(key, bucket)
        tokens = self._refill(bucket, rate, now)
        if tokens < cost:
            return False
        bucket[0] = tokens - cost
        return True

    def exhausted(self, key: str, rate: float, now: float) -> bool:
        """Whether the bucket is empty, without taking a token (checked before costly work)."""
        bucket = self._buckets.get(key)
        return bucket is not None and rate > 0 and self._refill(bucket, rate, now) < 1.0

    @staticmethod
    def _refill(bucket: list[float], rate: float, now: float) -> float:
        tokens = min(max(rate, 1.0), bucket[0] + (now - bucket[1]) * rate)
        bucket[0], bucket[1] = tokens, now
        return tokens

    def _add(self, key: str, bucket: list[float]) -> None:
        if len(self._buckets) >= self._max_keys:
            for stale in list(self._buckets)[: self._max_keys // 2]:
                del self._buckets[stale]
        self._buckets[key] = bucket

    def __len__(self) -> int:
        return len(self._buckets)
