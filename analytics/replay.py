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

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np

from gateway.engine import decide, metering
from gateway.registry.sqlite import SEAT_TOUCH_US
from gateway.types import Check, License, Metering, Outcome, Policy, Reason, Usage

OUTCOMES: tuple[Outcome, ...] = tuple(Outcome)
REASONS: tuple[Reason, ...] = tuple(Reason)
_OUTCOME_CODE = {o: i for i, o in enumerate(OUTCOMES)}
_REASON_CODE = {r: i for i, r in enumerate(REASONS)}
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
        codes = np.array([_codes(decide(*_inputs(history, policy, i), Usage(), _moment(history.ts_us[i])))
                          for i in free[first].tolist()], dtype=np.int8).reshape(-1, 2)
        outcome[free], reason[free] = codes[inverse, 0], codes[inverse, 1]
    steps = np.flatnonzero(metered)
    if len(steps):
        _step(history, policy, steps, combo, outcome, reason)
    return outcome, reason


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


def _inputs(history: History, policy: Policy, i: int) -> tuple[License, Policy, Check]:
    user = history.user[i]
    return history.licenses[history.state[i]], policy, Check(
        feature=history.features[history.feature[i]], environment=history.environments[history.environment[i]],
        user_id=None if user < 0 else history.users[user], quantity=int(history.quantity[i]))


def _codes(decision) -> tuple[int, int]:
    return _OUTCOME_CODE[decision.outcome], _REASON_CODE[decision.reason]


def _step(history: History, policy: Policy, steps: np.ndarray, combo: np.ndarray,
          outcome: np.ndarray, reason: np.ndarray) -> None:
    """Decide metered records one by one in time order, keeping usage as the registry store does:
    a seat is held by a user whose last use (written at most once per ``SEAT_TOUCH_US``) lies
    within ``seat_ttl_days``; quota is consumed per (license, quota key, period); a deny changes
    neither."""
    ttl_us = policy.seat_ttl_days * _DAY_US
    seen: dict[str, dict[int, int]] = {}  # license -> user -> last use written, µs
    used: dict[tuple[str, str, int], int] = {}  # (license, quota key, period start µs) -> units
    meters: dict[tuple[int, int], Metering] = {}  # (state * features + feature, day) -> its metering
    memo: dict[tuple[int, int, bool, bool], tuple[int, int]] = {}
    nf = len(history.features)
    ts_all, state_all, feature_all, user_all = history.ts_us, history.state, history.feature, history.user
    for i in steps.tolist():
        ts, user = int(ts_all[i]), int(user_all[i])
        lic, _, check = _inputs(history, policy, i)
        now = _moment(ts)
        key = (int(state_all[i]) * nf + int(feature_all[i]), ts // _DAY_US)
        meter = meters.get(key)
        if meter is None:
            meter = meters[key] = metering(lic, policy, check, now)
        holders = seen.setdefault(lic.license_id, {}) if meter.seat_limit is not None else None
        seats, last = 0, None
        if holders is not None:
            since = ts - ttl_us
            seats = sum(1 for t in holders.values() if t >= since)
            last = holders.get(user)
            last = last if last is not None and last >= since else None
        counter = None
        if meter.quota is not None:
            counter = (lic.license_id, meter.quota_key, _us(meter.period_start, 0))
            decision = decide(lic, policy, check, Usage(seats, last is not None, used.get(counter, 0)), now, meter=meter)
            codes = _codes(decision)
        else:
            memo_key = (int(combo[i]), seats, last is not None, user < 0)
            codes = memo.get(memo_key)
            decision = None
            if codes is None:
                decision = decide(lic, policy, check, Usage(seats, last is not None), now, meter=meter)
                codes = memo[memo_key] = _codes(decision)
        outcome[i], reason[i] = codes
        if OUTCOMES[codes[0]] is Outcome.DENY:
            continue
        if holders is not None and user >= 0 and (last is None or ts - last > SEAT_TOUCH_US):
            holders[user] = ts
        if decision is not None and decision.consume:
            used[counter] = used.get(counter, 0) + decision.consume
