"""Replay recorded checks through the pure engine under one policy, usage rebuilt as it goes.

Every decision comes from :func:`gateway.engine.decide`; this module only feeds it, in time
order, the license as it was, the check as recorded, and the usage state that the replayed
decisions themselves built up (seats held per license, quota consumed per license, quota key and
period), the way the registry store keeps them. No licensing rule is restated here.

It is fast because most checks cannot depend on usage: when ``metering`` says a check touches no
seat and no quota, its decision is a function of (license as it was, feature, environment, where
the moment falls relative to the license's start, expiry, grace and warning edges), so each
distinct combination is decided once and the answer spread over all its records with numpy.
Only checks that are metered are stepped through one by one; those without a quota are decided
once per (combination, seats used, holds a seat), since nothing else of the usage matters to them.
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from multiprocessing import get_context

import numpy as np

from gateway.engine import decide, metering
from gateway.registry.sqlite import SEAT_TOUCH_US
from gateway.types import Check, License, Metering, Outcome, Policy, Reason, Usage

OUTCOMES: tuple[Outcome, ...] = tuple(Outcome)
REASONS: tuple[Reason, ...] = tuple(Reason)
_OUTCOME_CODE = {o: i for i, o in enumerate(OUTCOMES)}
_REASON_CODE = {r: i for i, r in enumerate(REASONS)}
_DENY = _OUTCOME_CODE[Outcome.DENY]
_DAY_US = 86_400_000_000
_PHASES = 5  # expiry phases (4) plus perpetual
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class History:
    """Recorded checks in time order, as numpy columns; strings as codes into their lists.

    ``state`` indexes ``licenses``: each license as it was when the record was made (one entry per
    distinct tier, expiry and status a license had in the trail).
    """

    ts_us: np.ndarray  # int64
    state: np.ndarray  # int64, into licenses
    feature: np.ndarray  # int64, into features
    environment: np.ndarray  # int64, into environments
    user: np.ndarray  # int64, into users; -1 = none
    quantity: np.ndarray  # int64
    licenses: list[License]
    features: list[str]
    environments: list[str]
    users: list[str]

    def __len__(self) -> int:
        return len(self.ts_us)

    def take(self, index: np.ndarray) -> History:
        """The records at ``index`` (sorted), sharing the code lists."""
        return History(self.ts_us[index], self.state[index], self.feature[index], self.environment[index],
                       self.user[index], self.quantity[index], self.licenses, self.features, self.environments,
                       self.users)


def _moment(ts_us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(ts_us))


def _us(moment: datetime | None, default: int) -> int:
    return default if moment is None else (moment - _EPOCH) // timedelta(microseconds=1)


def replay(history: History, policy: Policy) -> tuple[np.ndarray, np.ndarray]:
    """The engine's (outcome code, reason code) for every record of ``history`` under ``policy``.

    Codes index :data:`OUTCOMES` and :data:`REASONS`.
    """
    n = len(history)
    outcome = np.zeros(n, dtype=np.int8)
    reason = np.zeros(n, dtype=np.int8)
    if not n:
        return outcome, reason
    nf, ne = len(history.features), len(history.environments)
    pair = history.state * nf + history.feature
    pairs, pair_of = np.unique(pair, return_inverse=True)
    metered = np.array([_reads_usage(history.licenses[p // nf], policy, history.features[p % nf])
                        for p in pairs.tolist()], dtype=bool)[pair_of]
    combo = ((pair * ne + history.environment) * _PHASES + _phase(history, policy)) * 2 + _started(history)

    free = np.flatnonzero(~metered)
    if len(free):
        keys, first, inverse = np.unique(combo[free], return_index=True, return_inverse=True)
        codes = np.array([_codes(decide(history.licenses[history.state[i]], policy, _check(history, i), Usage(),
                                        _moment(history.ts_us[i]))) for i in free[first].tolist()],
                         dtype=np.int8).reshape(-1, 2)
        outcome[free], reason[free] = codes[inverse, 0], codes[inverse, 1]
    steps = np.flatnonzero(metered)
    if len(steps):
        _step(history, policy, steps, combo, outcome, reason)
    return outcome, reason


# Below this many records a second process costs more than it saves.
PARALLEL_MIN = 200_000
_FORKED: History | None = None  # the history a forked worker replays (inherited, never pickled)


def replay_each(history: History, policies: list[Policy], workers: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`replay` under each policy; with ``workers`` > 1, the policies in parallel, each in a
    forked process that inherits the history instead of receiving a copy. Only for a process that
    may fork (a command, not the gateway's event loop)."""
    if workers <= 1 or len(policies) < 2 or len(history) < PARALLEL_MIN:
        return [replay(history, policy) for policy in policies]
    global _FORKED
    _FORKED = history
    try:
        with ProcessPoolExecutor(min(workers, len(policies)), mp_context=get_context("fork")) as pool:
            return list(pool.map(_replay_forked, policies))
    finally:
        _FORKED = None


def _replay_forked(policy: Policy) -> tuple[np.ndarray, np.ndarray]:
    return replay(_FORKED, policy)


def _reads_usage(lic: License, policy: Policy, feature: str) -> bool:
    """Whether a check of ``feature`` on ``lic`` reads usage (a seat limit or a quota). Which
    counters a check touches does not depend on the moment, only their period does."""
    meter = metering(lic, policy, Check(feature=feature, environment=""), _EPOCH)
    return meter.seat_limit is not None or meter.quota is not None


def _phase(history: History, policy: Policy) -> np.ndarray:
    """Where each record's moment falls relative to its license's expiry: past the grace period,
    in it, within the warning window, before it (0-3), or 4 for a perpetual license. Each edge is
    a ``left <= edge`` test in the engine, hence ``searchsorted(..., 'left')``."""
    expires = np.array([_us(lic.expires_at, -1) for lic in history.licenses], dtype=np.int64)[history.state]
    edges = np.array([-policy.grace_days * _DAY_US, 0, policy.expiring_warn_days * _DAY_US], dtype=np.int64)
    phase = np.searchsorted(edges, expires - history.ts_us, side="left")
    perpetual = np.array([lic.expires_at is None for lic in history.licenses], dtype=bool)[history.state]
    return np.where(perpetual, 4, phase)


def _started(history: History) -> np.ndarray:
    starts = np.array([_us(lic.starts_at, np.iinfo(np.int64).min) for lic in history.licenses],
                      dtype=np.int64)[history.state]
    return (history.ts_us >= starts).astype(np.int64)


def _check(history: History, i: int) -> Check:
    user = history.user[i]
    return Check(feature=history.features[history.feature[i]], environment=history.environments[history.environment[i]],
                 user_id=None if user < 0 else history.users[user], quantity=int(history.quantity[i]))


def _codes(decision) -> tuple[int, int]:
    return _OUTCOME_CODE[decision.outcome], _REASON_CODE[decision.reason]


class _Seats:
    """The seat holders of one license: user -> last use written (µs), and how many of them hold
    a seat, counted again only once the earliest of them may have lapsed."""

    __slots__ = ("ttl_us", "holders", "count", "valid_until")

    def __init__(self, ttl_us: int) -> None:
        self.ttl_us = ttl_us
        self.holders: dict[int, int] = {}
        self.count, self.valid_until = 0, -1

    def used(self, ts: int) -> int:
        if ts >= self.valid_until:
            since = ts - self.ttl_us
            live = [t for t in self.holders.values() if t >= since]
            self.count, self.valid_until = len(live), (min(live) + self.ttl_us if live else 1 << 62)
        return self.count

    def holds(self, user: int, ts: int) -> int | None:
        """When ``user``'s use was last written, if it still holds a seat at ``ts``."""
        last = self.holders.get(user)
        return last if last is not None and last >= ts - self.ttl_us else None

    def touch(self, user: int, ts: int, held: bool) -> None:
        self.holders[user] = ts
        if not held:
            self.count += 1
            self.valid_until = min(self.valid_until, ts + self.ttl_us)


def _step(history: History, policy: Policy, steps: np.ndarray, combo: np.ndarray,
          outcome: np.ndarray, reason: np.ndarray) -> None:
    """Decide metered records one by one in time order, keeping usage as the registry store does:
    a seat is held by a user whose last use (written at most once per ``SEAT_TOUCH_US``) lies
    within ``seat_ttl_days``; quota is consumed per (license, quota key, period); a deny changes
    neither. The engine is asked only for what the memo has not seen: for checks without a quota,
    its answer depends on the usage only through (seats used, holds a seat)."""
    ttl_us = policy.seat_ttl_days * _DAY_US
    seats_of: dict[int, _Seats] = {}  # license's first state -> its seats
    used: dict[tuple[str, str, int], int] = {}  # (license, quota key, period start µs) -> units
    meters: dict[tuple[int, int], Metering] = {}  # (state * features + feature, day or 0) -> its metering
    quota_pairs: set[int] = set()  # the (state, feature) pairs with a quota, whose metering is per day
    memo: dict[tuple[int, int, bool, bool], tuple[int, int]] = {}
    nf = len(history.features)
    owner = _license_slots(history.licenses)
    columns = (history.ts_us[steps], history.user[steps], history.state[steps] * nf + history.feature[steps],
               combo[steps], steps)
    for ts, user, pair, combo_i, i in zip(*(c.tolist() for c in columns)):
        lic = history.licenses[pair // nf]
        key = (pair, ts // _DAY_US if pair in quota_pairs else 0)
        meter = meters.get(key)
        if meter is None:
            meter = meters[key] = metering(lic, policy, _check(history, i), _moment(ts))
            if meter.quota is not None and pair not in quota_pairs:  # its period matters: per day from now on
                quota_pairs.add(pair)
                meter = meters[(pair, ts // _DAY_US)] = meters.pop(key)
        seats = seats_of.get(owner[pair // nf]) if meter.seat_limit is not None else None
        if seats is None and meter.seat_limit is not None:
            seats = seats_of[owner[pair // nf]] = _Seats(ttl_us)
        n_seats, last = 0, None
        if seats is not None:
            n_seats, last = seats.used(ts), seats.holds(user, ts)
        held = last is not None
        decision = None
        if meter.quota is not None:
            counter = (lic.license_id, meter.quota_key, _us(meter.period_start, 0))
            decision = decide(lic, policy, _check(history, i), Usage(n_seats, held, used.get(counter, 0)), _moment(ts),
                              meter=meter)
            codes = _codes(decision)
        else:
            memo_key = (combo_i, n_seats, held, user < 0)
            codes = memo.get(memo_key)
            if codes is None:
                codes = memo[memo_key] = _codes(decide(lic, policy, _check(history, i), Usage(n_seats, held),
                                                       _moment(ts), meter=meter))
        outcome[i], reason[i] = codes
        if codes[0] == _DENY:
            continue
        if seats is not None and user >= 0 and (not held or ts - last > SEAT_TOUCH_US):
            seats.touch(user, ts, held)
        if decision is not None and decision.consume:
            used[counter] = used.get(counter, 0) + decision.consume


def _license_slots(licenses: list[License]) -> list[int]:
    """For each license state, the index of the first state of the same license: usage belongs
    to the license, whatever tier or expiry it had at the time."""
    first: dict[str, int] = {}
    return [first.setdefault(lic.license_id, i) for i, lic in enumerate(licenses)]
