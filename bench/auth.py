"""Authentication cost per request, side by side in one run: what do caller auth and rate
limiting add on top of the HMAC itself?

(a) ``hmac``: the irreducible work, SHA-256 of the body plus HMAC-SHA256 of the canonical string
    (``gateway.auth.sign``);
(b) ``authenticate``: ``HmacAuthenticator.authenticate`` (header checks, key lookup, the same
    HMAC, constant-time compare, nonce recorded where one worker keeps them: in memory and in its
    journal; ``bench.nonces`` compares the places nonces can be kept);
(c) ``authenticate_ratelimit``: (b) plus what the gate adds around it, the per-address
    failed-auth check before and the caller's token bucket after.

Every call gets its own pre-signed request (fresh nonce), built outside the timed loops. The
three variants are timed in interleaved rounds so they share the machine's noise; the figures
are medians over rounds of the per-call time.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from gateway.auth import HmacAuthenticator, sign
from gateway.callers import Caller, CallerDirectory
from gateway.nonce_journal import JournaledNonces
from gateway.ratelimit import RateLimiter

KEY_ID, SECRET = "pk_0123456789abcdef", "ps_" + secrets.token_urlsafe(32)
CALLER = Caller("billing", key_ids=(KEY_ID,), rate_limit_rps=1e9)  # a real bucket that never runs dry
PATH = "/v1/check"
BODY = json.dumps({"license_key": "LK-ABCDE-FGHIJ-KLMNO-PQRST-UVWXY", "feature": "export",
                   "user_id": "u-123", "request_id": "req-0001"}).encode()


def _requests(n: int, now: float) -> list[dict[str, str]]:
    timestamp = str(int(now))
    out = []
    for _ in range(n):
        nonce = secrets.token_urlsafe(18)
        out.append({"X-Port-Key-Id": KEY_ID, "X-Port-Timestamp": timestamp, "X-Port-Nonce": nonce,
                    "X-Port-Signature": sign(SECRET, "POST", PATH, timestamp, nonce, BODY)})
    return out


def _per_call_ns(calls, n: int) -> float:
    start = time.perf_counter_ns()
    calls()
    return (time.perf_counter_ns() - start) / n


def run(rounds: int = 40, per_round: int = 2000) -> dict:
    directory = CallerDirectory({CALLER.caller_id: CALLER}, {KEY_ID: SECRET.encode()})
    timings: dict[str, list[float]] = {"hmac": [], "authenticate": [], "authenticate_ratelimit": []}
    loop = asyncio.new_event_loop()  # authenticate is awaited, as the gate does; it never suspends here
    with tempfile.TemporaryDirectory(prefix="bench-auth-") as tmp:
        for round_ in range(rounds):
            now = time.time()
            batch_b, batch_c = _requests(per_round, now), _requests(per_round, now)
            auth = HmacAuthenticator(directory, 300, JournaledNonces(Path(tmp) / str(round_), 300, now))
            addresses, callers = RateLimiter(), RateLimiter()

            def bare() -> None:
                for h in batch_b:
                    sign(SECRET, "POST", PATH, h["X-Port-Timestamp"], h["X-Port-Nonce"], BODY)

            async def authenticate() -> None:
                for h in batch_b:
                    assert (await auth.authenticate("POST", PATH, h, BODY, now)).caller is not None

            async def authenticate_ratelimit() -> None:
                for h in batch_c:
                    if addresses.exhausted("10.0.0.7", 20.0, now):
                        raise AssertionError("address throttled")
                    caller = (await auth.authenticate("POST", PATH, h, BODY, now)).caller
                    assert caller is not None and callers.allow(caller.caller_id, caller.rate_limit_rps, now)

            timings["hmac"].append(_per_call_ns(bare, per_round))
            timings["authenticate"].append(_per_call_ns(lambda: loop.run_until_complete(authenticate()), per_round))
            timings["authenticate_ratelimit"].append(
                _per_call_ns(lambda: loop.run_until_complete(authenticate_ratelimit()), per_round))
            auth.nonces.close()
    loop.close()

    med = {name: statistics.median(values) / 1000 for name, values in timings.items()}
    spread = {name: (sorted(v)[len(v) // 10] / 1000, sorted(v)[len(v) * 9 // 10] / 1000) for name, v in timings.items()}
    return {
        "hmac_us": round(med["hmac"], 3),
        "authenticate_us": round(med["authenticate"], 3),
        "authenticate_ratelimit_us": round(med["authenticate_ratelimit"], 3),
        "auth_over_hmac_us": round(med["authenticate"] - med["hmac"], 3),
        "ratelimit_over_auth_us": round(med["authenticate_ratelimit"] - med["authenticate"], 3),
        "ratio_authenticate_to_hmac": round(med["authenticate"] / med["hmac"], 2),
        "ratio_ratelimit_to_hmac": round(med["authenticate_ratelimit"] / med["hmac"], 2),
        "p10_p90_us": {name: [round(lo, 3), round(hi, 3)] for name, (lo, hi) in spread.items()},
        "rounds": rounds, "calls_per_round": per_round, "body_bytes": len(BODY),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
