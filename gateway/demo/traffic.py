"""Live demo traffic: signed requests through the real HTTP API, continuing the synthetic history.

The live hour should look like the hours before it, not like an incident: by default requests
come at the history's own rate for the hour of day (:func:`history_rate`), and in about its mix
(mostly allowed, a few per cent alerts and denials). Most requests come from the well-behaved
caller, mostly for the healthy license, now and then for one in every other state (expiring, in
grace, expired, revoked, quota running out, seats full, batches). The misbehaving caller, one
request in thirty, presents unknown keys and sometimes signs with a wrong secret or a stale
clock: what the security page, the alerts and the breach webhook are about.
"""
from __future__ import annotations

import asyncio
import json
import random
import secrets
import time
from collections import Counter
from datetime import datetime
from typing import Callable

import aiohttp

from analytics.synth.traffic import load
from gateway.auth import signed_headers
from gateway.demo.data import BAD_CALLER, GOOD_CALLER, PRODUCT, DemoState

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
# How often each demo license is asked about, relative to the others.
WEIGHTS = {"healthy": 85, "expiring": 3, "in_grace": 1, "expired": 2, "revoked": 2, "near_quota": 4,
           "seats_full": 3}
BAD_SHARE = 0.03  # requests from the misbehaving caller (the history refuses about 3 % at the door)


def history_rate(rows: int, days: int, when: datetime) -> float:
    """Requests per second of a synthetic history of ``rows`` records over ``days`` days at the
    hour of ``when`` (``analytics.synth``'s daily curve): the live traffic's default rate."""
    return float(rows / (days * 86400) * load(when.hour))


def _unknown_key() -> str:
    return "LK-" + "-".join("".join(secrets.choice(_ALPHABET) for _ in range(5)) for _ in range(5))


class Traffic:
    def __init__(self, url: str, state: DemoState, rate: float, rng: random.Random | None = None) -> None:
        self.url, self.state, self.rate = url.rstrip("/"), state, rate
        self.rng = rng or random.Random()
        self.answers: Counter[str] = Counter()  # "status reason" -> count

    def _good(self) -> tuple[str, dict]:
        rng, keys = self.rng, self.state.keys
        label = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
        feature = {"healthy": rng.choice(["export", "api.calls", "reports.advanced"]),
                   "near_quota": "export", "seats_full": "dashboard.view"}.get(label, rng.choice(["dashboard.view",
                                                                                                "reports.basic"]))
        check = {"license_key": keys[label], "feature": feature, "product": PRODUCT,
                 "user_id": f"user-{rng.randint(1, 6 if label == 'seats_full' else 40)}"}
        if feature in ("export", "api.calls"):
            check["quantity"] = rng.randint(1, 3)
        if rng.random() < 0.1:
            return "/v1/check/batch", {"checks": [check, dict(check, user_id=f"user-{rng.randint(1, 40)}")]}
        return "/v1/check", check

    def _bad(self) -> tuple[str, dict]:
        return "/v1/check", {"license_key": _unknown_key(), "feature": "export", "product": PRODUCT,
                             "user_id": f"probe-{self.rng.randint(1, 999)}"}

    async def _send(self, session: aiohttp.ClientSession) -> None:
        bad = self.rng.random() < BAD_SHARE
        path, doc = self._bad() if bad else self._good()
        key_id, secret = self.state.callers[BAD_CALLER if bad else GOOD_CALLER]
        now = time.time()
        if bad and self.rng.random() < 0.3:
            secret = secret[::-1]  # a wrong signature
        elif bad and self.rng.random() < 0.1:
            now -= 3600  # a skewed clock
        body = json.dumps(doc).encode()
        headers = {"Content-Type": "application/json", **signed_headers(key_id, secret, "POST", path, body, now)}
        try:
            async with session.post(self.url + path, data=body, headers=headers) as response:
                answer = await response.json()
                self.answers[f"{response.status} {answer.get('reason', 'batch')}"] += 1
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            self.answers[f"error {type(exc).__name__}"] += 1

    async def run(self, stop: asyncio.Event, report: Callable[[str], None] | None = None) -> None:
        """Send until ``stop`` is set; one line of totals every 10 s through ``report``."""
        interval, reported = 1.0 / self.rate, time.monotonic()
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            pending: set[asyncio.Task] = set()
            while not stop.is_set():
                task = asyncio.create_task(self._send(session))
                pending.add(task)
                task.add_done_callback(pending.discard)
                if report and time.monotonic() - reported >= 10:
                    reported = time.monotonic()
                    report(self.summary())
                try:
                    await asyncio.wait_for(stop.wait(), interval)
                except asyncio.TimeoutError:
                    pass
            await asyncio.gather(*pending, return_exceptions=True)

    def summary(self) -> str:
        total = sum(self.answers.values())
        top = ", ".join(f"{k}: {n}" for k, n in self.answers.most_common(6))
        return f"{total} requests sent ({top})"
