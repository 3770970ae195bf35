"""What remembering a nonce costs per request, side by side in one run, by where it is kept:

- ``memory``: the in-process cache alone (what one worker did before nonces survived a restart);
- ``journal``: the same cache plus one ``write(2)`` to the journal (one worker now);
- ``registry``: one write transaction in the registry's SQLite file (``--workers N``).

Each store is measured empty and holding ``prefill`` nonces (a busy gateway's window: 5,000
requests/s for 600 s is three million), in interleaved rounds of fresh nonces; the figures are
medians over rounds of the per-call time, in µs.
"""
from __future__ import annotations

import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from gateway.auth import NonceCache
from gateway.nonce_journal import JournaledNonces
from gateway.registry.nonces import SqliteNonces

WINDOW_S = 300


def _stores(root: Path, filled: list[tuple[str, int]], now: float) -> dict:
    memory = NonceCache(WINDOW_S)
    for nonce, expires in filled:
        memory.restore(nonce, expires)
    registry = SqliteNonces(root / "registry.db", WINDOW_S)
    registry.absorb(filled)
    return {"memory": memory, "journal": JournaledNonces(root / "journal", WINDOW_S, now, filled),
            "registry": registry}


def run(prefill: int = 1_000_000, rounds: int = 15, per_round: int = 2000) -> dict:
    now = time.time()
    result: dict = {"prefill": prefill, "rounds": rounds, "calls_per_round": per_round}
    for size in (0, prefill):
        filled = [(secrets.token_urlsafe(18), int(now) + 2 * WINDOW_S) for _ in range(size)]
        with tempfile.TemporaryDirectory() as tmp:
            stores = _stores(Path(tmp), filled, now)
            timings: dict[str, list[float]] = {name: [] for name in stores}
            for _ in range(rounds):
                for name, store in stores.items():
                    batch = [secrets.token_urlsafe(18) for _ in range(per_round)]
                    began = time.perf_counter_ns()
                    for nonce in batch:
                        store.add(nonce, now)
                    timings[name].append((time.perf_counter_ns() - began) / per_round / 1000)
            for name, store in stores.items():
                getattr(store, "close", lambda: None)()
        result["empty" if size == 0 else "filled"] = {name: round(statistics.median(v), 2)
                                                      for name, v in timings.items()}
    return result


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
