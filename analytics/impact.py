"""Policy impact: replay the recorded checks under the current and a proposed policy, and report
every decision that would change, before anyone reloads anything.

Reads only: the audit trail through a DuckDB connection of :mod:`analytics.db`, and the licenses
from the registry opened read-only (``mode=ro``) or, where the registry may not be read (the
dashboard), from the analytics snapshot. Nothing is written anywhere. The decisions themselves
come from :func:`analytics.replay.replay`, i.e. from the engine.

Licenses are taken as they were where the trail says so: every record carries the license's
tier and expiry, and its reason says whether the license was revoked or suspended then (the
status checks come before all others, so any other reason means it was active). Everything else
(extra features, environments, seat and quota overrides, start) is as the registry holds it now.
Usage is rebuilt from the replayed decisions, starting a warm-up before the window (the longer
of the seat time-to-live and a month), so seats and quotas carried into the window are counted.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping

import duckdb
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analytics import db
from analytics.replay import OUTCOMES, REASONS, History, replay_each
from gateway.licenses import from_us, stored_license
from gateway.types import License, Policy, Reason, Status

EXAMPLES_PER_CHANGE = 3
MAX_EXAMPLES = 30
# Answers given before the engine was asked (transport, caller scope, faults): not replayed.
_BEFORE_ENGINE = ("UNAUTHENTICATED", "CALLER_NOT_AUTHORIZED", "RATE_LIMITED", "PAYLOAD_TOO_LARGE",
                  "AUDIT_UNAVAILABLE", "REGISTRY_UNAVAILABLE", "INTERNAL_ERROR")
_USAGE_REASONS = (Reason.SEAT_LIMIT_EXCEEDED, Reason.SEAT_OVERAGE, Reason.QUOTA_EXCEEDED, Reason.QUOTA_OVERAGE,
                  Reason.QUOTA_NEAR_LIMIT)
_HISTORY_SQL = f"""
SELECT epoch_us(ts) AS ts_us, license_id, coalesce(tier, '') AS tier,
       coalesce(epoch_us(expires_at), -1) AS expires_us,
       CASE reason WHEN 'LICENSE_REVOKED' THEN 'revoked' WHEN 'LICENSE_SUSPENDED' THEN 'suspended'
                   ELSE 'active' END AS status,
       coalesce(customer, '') AS customer, coalesce(product, '') AS product, feature, environment, user_id,
       quantity, decision, reason, policy_version
FROM audit_window($since, $until)
WHERE endpoint IN ('check', 'batch') AND license_id IS NOT NULL AND feature IS NOT NULL
  AND reason NOT IN ({", ".join(f"'{r}'" for r in _BEFORE_ENGINE)})
"""


class ImpactError(ValueError):
    """The replay cannot run; the message says why."""


@dataclass(frozen=True)
class Licenses:
    """The licenses to replay with, and where they came from (said in every report)."""

    by_id: Mapping[str, License]
    source: str


def registry_licenses(db_path: Path, url: str = "") -> Licenses:
    """The registry's licenses: in PostgreSQL if ``url`` (the ``registry_url`` setting) names
    it, else in the SQLite file, read through a read-only connection (never a write, not even
    the schema set-up the store does)."""
    if url:
        return _shared_registry_licenses(url)
    try:
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            rows = con.execute("SELECT doc FROM licenses").fetchall()
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise ImpactError(f"{db_path}: cannot read the license registry: {exc}") from None
    licenses = {lic.license_id: lic for lic in (stored_license(orjson.loads(doc)) for (doc,) in rows)}
    return Licenses(licenses, f"registry {db_path} (read-only)")


def _shared_registry_licenses(url: str) -> Licenses:
    from gateway.registry import RegistryUnavailable
    from gateway.registry.pgconn import where
    from gateway.registry.postgres import PostgresStore
    try:
        store = PostgresStore(url)
        try:
            _, licenses = store.licenses_since(0)
        finally:
            store.close()
    except RegistryUnavailable as exc:
        raise ImpactError(str(exc)) from None
    return Licenses({lic.license_id: lic for lic in licenses}, f"registry {where(url)}")


def snapshot_licenses(con: duckdb.DuckDBPyConnection, current: Policy) -> Licenses:
    """The licenses of the analytics snapshot (``licenses`` view). It has no key hashes and no
    quota overrides, and its ``seats_limit`` is the limit in force when it was published (the
    license's own, else its tier's): it is taken as the license's own where the ``current``
    policy's tier does not give that limit."""
    rows = db.query(con, "SELECT license_id, customer, product, tier, status, features, seats_limit, "
                         "environments, starts_at, expires_at FROM licenses").to_pylist()
    licenses = {row["license_id"]: License(
        license_id=row["license_id"], key_hash="", customer=row["customer"], product=row["product"] or "",
        tier=row["tier"], status=Status(row["status"]), features=tuple(row["features"] or ()),
        seats=_own_seats(row, current), starts_at=row["starts_at"], expires_at=row["expires_at"],
        environments=tuple(row["environments"] or ("*",))) for row in rows}
    return Licenses(licenses, "analytics snapshot of the registry (license quota overrides not known; "
                              "its seat limits taken as the licenses' own)")


def _own_seats(row: Mapping[str, Any], current: Policy) -> int | None:
    tier = current.tiers.get(row["tier"])
    return None if tier is not None and tier.seats == row["seats_limit"] else row["seats_limit"]


@dataclass(frozen=True)
class Recorded:
    """What the trail says was answered, beside the history to replay."""

    history: History
    outcome: np.ndarray  # int8 codes into OUTCOMES (-1: unknown)
    reason: np.ndarray  # int8 codes into REASONS (-1: unknown)
    policy_version: pa.Array
    customer: pa.Array
    tier: pa.Array


def read_history(con: duckdb.DuckDBPyConnection, since: datetime, until: datetime, licenses: Licenses) -> Recorded:
    """The checks that reached the engine in [since, until), in no particular order (the replay
    orders what needs ordering)."""
    table = db.query(con, _HISTORY_SQL, {"since": since, "until": until})
    lic_codes, lic_ids = _codes(table["license_id"])
    tier_codes, tiers = _codes(table["tier"])
    status_codes, statuses = _codes(table["status"])
    expires = table["expires_us"].to_numpy()
    exp_codes, exp_values = pd.factorize(expires)
    key = ((lic_codes * len(tiers) + tier_codes) * max(1, len(statuses)) + status_codes) * max(1, len(exp_values)) \
        + exp_codes
    state, keys = pd.factorize(key)
    first = np.full(len(keys), len(key), dtype=np.int64)
    np.minimum.at(first, state, np.arange(len(key)))
    customer_codes, customers = _codes(table["customer"])
    product_codes, products = _codes(table["product"])
    states = []
    for i in first.tolist():
        now = licenses.by_id.get(lic_ids[lic_codes[i]])
        exp = int(expires[i])
        as_recorded = dict(tier=tiers[tier_codes[i]], status=Status(statuses[status_codes[i]]),
                           expires_at=None if exp < 0 else from_us(exp))
        if now is None:  # gone from the registry: what the trail says, nothing more
            now = License(license_id=lic_ids[lic_codes[i]], key_hash="", customer=customers[customer_codes[i]],
                          product=products[product_codes[i]], tier="")
        states.append(now._replace(**as_recorded))
    feature_codes, features = _codes(table["feature"])
    env_codes, envs = _codes(table["environment"])
    user_codes, users = _codes(table["user_id"])
    history = History(ts_us=table["ts_us"].to_numpy(), state=state.astype(np.int64), feature=feature_codes,
                      environment=env_codes, user=user_codes, quantity=table["quantity"].to_numpy(),
                      licenses=states, features=features, environments=envs, users=users)
    return Recorded(history, _enum_codes(table["decision"], OUTCOMES), _enum_codes(table["reason"], REASONS),
                    table["policy_version"].combine_chunks(), table["customer"].combine_chunks(),
                    table["tier"].combine_chunks())


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, list]:
    """Dictionary codes (int64, -1 for null) and the dictionary of a string column."""
    encoded = pc.dictionary_encode(column.combine_chunks())
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, encoded.dictionary.to_pylist()


def _enum_codes(column: pa.ChunkedArray, members: tuple) -> np.ndarray:
    codes, values = _codes(column)
    index = {m.value: i for i, m in enumerate(members)}
    lookup = np.array([index.get(v, -1) for v in values] + [-1], dtype=np.int8)
    return lookup[codes]


def warmup(current: Policy, proposed: Policy) -> timedelta:
    """How long before the window usage is rebuilt from: a seat's lifetime, and a month of quota."""
    return timedelta(days=max(current.seat_ttl_days, proposed.seat_ttl_days, 31))


def impact(con: duckdb.DuckDBPyConnection, licenses: Licenses, current: Policy, proposed: Policy, *,
           days: int, now: datetime | None = None, proposed_source: str = "", workers: int = 1) -> dict[str, Any]:
    """The impact report of ``proposed`` over the last ``days`` days: :func:`replayable`, then
    :func:`compare`."""
    recorded, since, until = replayable(con, licenses, current, proposed, days=days, now=now)
    return compare(recorded, since, until, licenses, current, proposed, proposed_source=proposed_source,
                   workers=workers)


def replayable(con: duckdb.DuckDBPyConnection, licenses: Licenses, current: Policy, proposed: Policy, *,
               days: int, now: datetime | None = None) -> tuple[Recorded, datetime, datetime]:
    """The records to replay for a window of ``days`` days up to ``now``, warm-up included, and
    the window. The only part that needs the connection."""
    if days < 1:
        raise ImpactError("--days must be at least 1")
    until = now or datetime.now(timezone.utc)
    since = until - timedelta(days=days)
    return read_history(con, since - warmup(current, proposed), until, licenses), since, until


def compare(recorded: Recorded, since: datetime, until: datetime, licenses: Licenses, current: Policy,
            proposed: Policy, *, proposed_source: str = "", workers: int = 1) -> dict[str, Any]:
    """Replay under both policies and report (see :func:`report`); ``workers`` > 1 replays the
    two in forked processes (:func:`analytics.replay.replay_each`)."""
    h = recorded.history
    (cur_o, cur_r), (new_o, new_r) = replay_each(h, [current, proposed], workers)
    window = h.ts_us >= int(since.timestamp() * 1_000_000)
    return report(recorded, window, (cur_o, cur_r), (new_o, new_r), current, proposed) | {
        "since": since.isoformat(), "until": until.isoformat(), "days": (until - since).days,
        "licenses_source": licenses.source, "proposed_source": proposed_source}


def report(recorded: Recorded, window: np.ndarray, current_codes, proposed_codes, current: Policy,
           proposed: Policy) -> dict[str, Any]:
    """Counts of the changed decisions by transition, customer, tier, feature and day, examples,
    and the self-check: how many recorded answers the replay under the current policy gives
    again, and why the others differ."""
    h = recorded.history
    (cur_o, cur_r), (new_o, new_r) = current_codes, proposed_codes
    changed = window & ((cur_o != new_o) | (cur_r != new_r))
    idx = np.flatnonzero(changed)
    rows = pa.table({
        "ts": pa.array(h.ts_us[idx], pa.timestamp("us", tz="UTC")),
        "customer": recorded.customer.take(idx), "tier": recorded.tier.take(idx),
        "license_id": _decoded(h.state[idx], [lic.license_id for lic in h.licenses]),
        "feature": _decoded(h.feature[idx], h.features),
        "user_id": _decoded(h.user[idx], h.users),
        "before": _labels(cur_o[idx], cur_r[idx]), "after": _labels(new_o[idx], new_r[idx]),
    })
    with duckdb.connect(":memory:") as con:
        con.register("changed", rows)

        def rows_of(sql: str) -> list[dict]:
            return con.sql(sql).to_arrow_table().to_pylist()

        by = "count(*) AS records"
        result = {
            "current_policy": current.version, "proposed_policy": proposed.version,
            "replayed": int(window.sum()), "changed": len(idx),
            "self_check": self_check(recorded, window, cur_o, cur_r, current),
            "transitions": rows_of(f"SELECT before, after, {by} FROM changed GROUP BY ALL ORDER BY records DESC, before, after"),
            "by_customer": rows_of(f"SELECT customer, before, after, {by} FROM changed GROUP BY ALL "
                                   "ORDER BY customer, records DESC, before, after"),
            "by_tier": rows_of(f"SELECT tier, {by} FROM changed GROUP BY ALL ORDER BY records DESC, tier"),
            "by_feature": rows_of(f"SELECT feature, {by} FROM changed GROUP BY ALL ORDER BY records DESC, feature"),
            "by_day": rows_of(f"SELECT CAST(ts AS DATE)::VARCHAR AS day, after, {by} FROM changed GROUP BY ALL "
                              "ORDER BY day, after"),
            "examples": rows_of(f"""SELECT strftime(ts, '%Y-%m-%dT%H:%M:%S.%fZ') AS ts, customer, tier, license_id,
                                       feature, user_id, before, after FROM changed
                                   QUALIFY row_number() OVER (PARTITION BY before, after ORDER BY ts)
                                           <= {EXAMPLES_PER_CHANGE}
                                   ORDER BY ts LIMIT {MAX_EXAMPLES}"""),
        }
    return result


def _decoded(codes: np.ndarray, values: list[str]) -> pa.Array:
    """Strings from their codes (-1: null)."""
    return pa.DictionaryArray.from_arrays(pa.array(codes, mask=codes < 0), pa.array(values, pa.string())).cast(
        pa.string())


def _labels(outcome: np.ndarray, reason: np.ndarray) -> pa.Array:
    """``decision/REASON`` per record, built from the few distinct pairs."""
    inverse, values = pd.factorize(outcome.astype(np.int64) * len(REASONS) + reason)
    names = [f"{OUTCOMES[v // len(REASONS)].value}/{REASONS[v % len(REASONS)].value}" for v in values.tolist()]
    return _decoded(inverse, names)


def self_check(recorded: Recorded, window: np.ndarray, cur_o: np.ndarray, cur_r: np.ndarray,
               current: Policy) -> dict[str, Any]:
    """How many recorded answers the replay under the current policy reproduces; the others are
    counted under the first cause that explains them."""
    differ = window & ((cur_o != recorded.outcome) | (cur_r != recorded.reason))
    other_policy = np.asarray(pc.not_equal(recorded.policy_version, current.version).fill_null(True))
    usage = np.isin(recorded.reason, _reason_codes(_USAGE_REASONS)) | np.isin(cur_r, _reason_codes(_USAGE_REASONS))
    environment = (recorded.reason == REASONS.index(Reason.ENVIRONMENT_NOT_ALLOWED)) | \
        (cur_r == REASONS.index(Reason.ENVIRONMENT_NOT_ALLOWED))
    causes = (
        ("decided under another policy than the current one", other_policy),
        ("seat or quota usage, which the replay rebuilds from the trail (earlier use and other hosts' "
         "timing approximated)", usage),
        ("the check named an environment; the trail keeps the gateway's", environment),
        ("the license changed since (its features, environments, overrides or start are taken as they are now)",
         np.ones_like(differ)),
    )
    left, counted = differ.copy(), []
    for cause, mask in causes:
        hit = left & mask
        if hit.any():
            counted.append({"cause": cause, "records": int(hit.sum())})
        left &= ~mask
    return {"replayed": int(window.sum()), "reproduced": int(window.sum() - differ.sum()), "differ": counted}


def _reason_codes(reasons) -> list[int]:
    return [REASONS.index(r) for r in reasons]
