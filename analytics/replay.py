"""Replay recorded checks through the pure engine under one policy, usage rebuilt as it goes.

Every decision comes from :func:`gateway.engine.decide`; this module only feeds it, in time
order, the license as it was, the check as recorded, and the usage state that the replayed
decisions themselves built up (seats held per license, quota consumed per license, quota key and
period), the way the registry store keeps them. No licensing rule is restated here.

It is fast because most checks cannot depend on usage: when ``metering`` says a check touches no
seat and no quota, its decision is a function of (license as it was, feature, environment, where
the moment falls relative to the license's start, expiry, grace and warning edges), so each
distinct combination is decided once and the answer spread over all its records with numpy.
Only checks that are metered are stepped through one by one, in time order, and the engine is
asked again only for inputs it has not seen (the same combination with the same usage).
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from multiprocessing import get_context

import numpy as np
import pandas as pd

from gateway.engine import decide, metering
from gateway.registry.holders import SEAT_TOUCH_US
from gateway.types import Check, Decision, License, Outcome, Policy, Reason, Usage

OUTCOMES: tuple[Outcome, ...] = tuple(Outcome)
REASONS: tuple[Reason, ...] = tuple(Reason)
_OUTCOME_CODE = {o: i for i, o in enumerate(OUTCOMES)}
_REASON_CODE = {r: i for i, r in enumerate(REASONS)}
_REASONS_N = len(REASONS)
_DAY_US = 86_400_000_000
_PHASES = 5  # expiry phases (4) plus perpetual
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class History:
    """Recorded checks, in any order, as numpy columns; strings as codes into their lists.

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


def _moment(ts_us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(ts_us))


def _us(moment: datetime | None, default: int) -> int:
    return default if moment is None else (moment - _EPOCH) // timedelta(microseconds=1)


def replay(history: History, policy: Policy) -> tuple[np.ndarray, np.ndarray]:
    """The engine's (outcome code, reason code) for every record of ``history`` under ``policy``.

    Codes index :data:`OUTCOMES` and :data:`REASONS`. The records may come in any order: those
    whose answer depends on usage are stepped through in time order.
    """
    n = len(history)
    outcome = np.zeros(n, dtype=np.int8)
    reason = np.zeros(n, dtype=np.int8)
    if not n:
        return outcome, reason
    nf, ne = len(history.features), len(history.environments)
    pair = history.state * nf + history.feature
    pair_of, pairs = pd.factorize(pair)
    usage = np.array([_usage_read(history.licenses[p // nf], policy, history.features[p % nf])
                      for p in pairs.tolist()], dtype=np.int8)[pair_of]
    combo = ((pair * ne + history.environment) * _PHASES + _phase(history, policy)) * 2 + _started(history)

    free = np.flatnonzero(usage == 0)
    if len(free):
        inverse, keys = pd.factorize(combo[free])
        first = np.full(len(keys), len(free), dtype=np.int64)
        np.minimum.at(first, inverse, np.arange(len(free)))
        packed = np.array([_packed(decide(history.licenses[history.state[i]], policy, _check(history, i), Usage(),
                                          _moment(history.ts_us[i]))) for i in free[first].tolist()],
                          dtype=np.int16)[inverse]
        outcome[free], reason[free] = packed // _REASONS_N, packed % _REASONS_N
    steps = np.flatnonzero(usage)
    if len(steps):
        steps = steps[np.argsort(history.ts_us[steps], kind="stable")]
        packed = _step(history, policy, steps, combo * 2 + (history.user < 0), usage)
        outcome[steps], reason[steps] = packed // _REASONS_N, packed % _REASONS_N
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


_SEATS, _QUOTA = 1, 2  # what usage a check reads: bit flags


def _usage_read(lic: License, policy: Policy, feature: str) -> int:
    """Which usage a check of ``feature`` on ``lic`` reads: ``_SEATS``, ``_QUOTA``, both or none.
    Which counters a check touches does not depend on the moment, only their period does."""
    meter = metering(lic, policy, Check(feature=feature, environment=""), _EPOCH)
    return (_SEATS if meter.seat_limit is not None else 0) | (_QUOTA if meter.quota is not None else 0)


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


def _step(history: History, policy: Policy, steps: np.ndarray, combo: np.ndarray, usage: np.ndarray) -> np.ndarray:
    """Decide the records at ``steps`` (in time order) one by one, keeping usage as the registry
    store does: a seat is held by a user whose last use (written at most once per
    ``SEAT_TOUCH_US``) lies within ``seat_ttl_days``; quota is consumed per (license, quota key,
    period); a deny changes neither. Returns ``outcome * len(REASONS) + reason`` per step.

    This loop is the replay's cost, so it is flat: seat state in lists indexed by license, the
    number of seats held recounted only once the earliest holder may have lapsed, and the engine
    asked only for what the memo has not seen: the answer is memoised on ``combo`` (the license as
    it was, feature, environment, phase, and whether a user was named) and the usage it was given
    (seats used, holds a seat; with a quota, also the units used and the quantity asked).
    """
    ttl_us = policy.seat_ttl_days * _DAY_US
    nf = len(history.features)
    slot_of = _license_slots(history.licenses)
    n_licenses = max(slot_of) + 1
    holders: list[dict[int, int]] = [{} for _ in range(n_licenses)]  # user -> last use written, µs
    count = [0] * n_licenses  # seats held, as of the last recount or claim
    recount_at = [-1] * n_licenses  # the earliest moment a counted seat may lapse
    used: dict[tuple[str, str, int], int] = {}  # (license, quota key, period start µs) -> units
    counters: dict[tuple[int, int], tuple[str, str, int]] = {}  # (state * features + feature, day) -> quota counter
    memo: dict[int, int] = {}
    quota_memo: dict[tuple[int, int, bool, int, int], tuple[int, int]] = {}
    out: list[int] = []
    refused = [code // _REASONS_N == _OUTCOME_CODE[Outcome.DENY] for code in range(len(OUTCOMES) * _REASONS_N)]
    never, touch_us = 1 << 62, SEAT_TOUCH_US
    states = history.state[steps]
    columns = (history.ts_us[steps], history.user[steps], np.array(slot_of)[states], combo[steps],
               usage[steps], states * nf + history.feature[steps], history.quantity[steps], steps)
    for ts, user, slot, key, reads, pair, quantity, i in zip(*(c.tolist() for c in columns)):
        last, n_seats, since = None, 0, ts - ttl_us
        if reads & _SEATS:
            if ts >= recount_at[slot]:
                live = [t for t in holders[slot].values() if t >= since]
                count[slot], recount_at[slot] = len(live), (min(live) + ttl_us if live else never)
            n_seats = count[slot]
            last = holders[slot].get(user)
            if last is not None and last < since:
                last = None
        held = last is not None
        if reads & _QUOTA:
            counter = counters.get((pair, ts // _DAY_US))
            if counter is None:
                lic = history.licenses[pair // nf]
                meter = metering(lic, policy, _check(history, i), _moment(ts))
                counter = counters[(pair, ts // _DAY_US)] = (lic.license_id, meter.quota_key,
                                                            _us(meter.period_start, 0))
            units = used.get(counter, 0)
            memo_key = (key, n_seats, held, units, quantity)
            code_consume = quota_memo.get(memo_key)
            if code_consume is None:
                lic, now, check = history.licenses[pair // nf], _moment(ts), _check(history, i)
                decision = decide(lic, policy, check, Usage(n_seats, held, units), now)
                code_consume = quota_memo[memo_key] = (_packed(decision), decision.consume)
            code, consume = code_consume
            if consume:
                used[counter] = units + consume
        else:
            memo_key = (key << 32 | n_seats) << 1 | held
            code = memo.get(memo_key)
            if code is None:
                lic, now, check = history.licenses[pair // nf], _moment(ts), _check(history, i)
                code = memo[memo_key] = _packed(decide(lic, policy, check, Usage(n_seats, held), now))
        out.append(code)
        if reads & _SEATS and user >= 0 and not refused[code] and (not held or ts - last > touch_us):
            holders[slot][user] = ts
            if not held:
                count[slot] += 1
                recount_at[slot] = min(recount_at[slot], ts + ttl_us)
    return np.array(out, dtype=np.int16)


def _packed(decision: Decision) -> int:
    """A decision as one small integer: ``outcome * len(REASONS) + reason`` (codes into
    :data:`OUTCOMES` and :data:`REASONS`)."""
    return _OUTCOME_CODE[decision.outcome] * _REASONS_N + _REASON_CODE[decision.reason]


def _license_slots(licenses: list[License]) -> list[int]:
    """For each license state, a number for its license (the same for all its states): usage
    belongs to the license, whatever tier or expiry it had at the time."""
    slots: dict[str, int] = {}
    return [slots.setdefault(lic.license_id, len(slots)) for lic in licenses]
