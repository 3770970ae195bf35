"""What needs someone now: the Overview's first section, one item per kind of trouble, each naming
the page that shows it in full.

Pure: it turns report frames into :class:`Item` s, so what counts as trouble is tested without a
server. Refusals happening now (quotas that will run out, seats over the limit, zombie keys, key
probing, jumped deny rates) come before what is merely near (licenses in use expiring soon).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import pandas as pd

from dashboard.figures import ZOMBIE_KINDS

EXAMPLES = 3  # named in an item; the page lists them all
WARN_DAYS = 30  # the policy's default warning window before expiry (EXPIRING_SOON)


@dataclass(frozen=True)
class Item:
    page: str  # slug of the page that shows the whole list
    severity: Literal["deny", "alert"]  # red: refusing (or about to); amber: near
    headline: str
    examples: tuple[str, ...]
    more: int  # how many beyond the examples

    @property
    def detail(self) -> str:
        return ", ".join(self.examples) + (f" and {self.more:,} more" if self.more else "")


def gather(report: Callable[..., pd.DataFrame], window) -> list[Item]:
    """The attention list for ``window`` (a ``dashboard.data.TimeRange``), from ``report(name,
    [window], **params)``: the reports it needs, run by whoever calls (cached for a visitor, ahead
    of visitors by ``dashboard.watch``)."""
    # Called as the pages call them (no window where they read none), so the cache is shared.
    return items(
        expiring=report("expiring", days=WARN_DAYS), quota=report("quota-forecast"), seats=report("seats"),
        keys=report("stale-keys", window), unauthorized=report("unauthorized", window),
        jumps=report("deny-jumps", window), anomalies=report("key-anomalies"), warn_days=WARN_DAYS)


def items(*, expiring: pd.DataFrame, quota: pd.DataFrame, seats: pd.DataFrame, keys: pd.DataFrame,
          unauthorized: pd.DataFrame, jumps: pd.DataFrame, anomalies: pd.DataFrame, warn_days: int) -> list[Item]:
    """Everything that needs attention, the refusing first. Reports: ``expiring`` (``days`` =
    ``warn_days``), ``quota-forecast``, ``seats``, ``stale-keys``, ``unauthorized``, ``deny-jumps``,
    ``key-anomalies``."""
    found = [
        _item("licenses", "deny", ("quota projected to run out before its period ends",
                                    "quotas projected to run out before their period ends"),
              quota[quota["runs_out"]] if len(quota) else quota,
              lambda r: f"{r.customer} · {r.license_id} · {r.feature} ({r.used_pct:g} % used)"),
        _item("licenses", "deny", ("license full or over its seat limit, refusing users",
                                   "licenses full or over their seat limit, refusing users"),
              seats[(seats["seats_used"] > seats["seats_limit"]) | (seats["seat_denials"] > 0)] if len(seats) else seats,
              lambda r: f"{r.customer} · {r.license_id} ({r.seats_used}/{r.seats_limit} seats)"),
        _item("keys", "deny", ("zombie key still presented", "zombie keys still presented"),
              keys[keys["kind"].isin(ZOMBIE_KINDS)].sort_values("presented", ascending=False) if len(keys) else keys,
              lambda r: f"{r.key_fp} ({r.kind}, presented {int(r.presented):,}×)"),
        _item("security", "deny", ("caller probing for license keys", "callers probing for license keys"),
              unauthorized[unauthorized["kind"] == "key_probing"] if len(unauthorized) else unauthorized,
              lambda r: f"{_source(r)} ({int(r.distinct_keys):,} unknown keys)"),
        _item("security", "deny", ("caller or host whose deny rate jumped",
                                        "callers or hosts whose deny rate jumped"), jumps,
              lambda r: f"{r.kind} {r.source} ({r.previous_deny_pct:g} % → {r.deny_pct:g} %)"),
        _item("keys", "alert", ("key used in a new way (a leak?)", "keys used in a new way (a leak?)"),
              anomalies.drop_duplicates("key_fp") if len(anomalies) else anomalies,
              lambda r: f"{r.customer} · {r.key_fp} ({_anomaly(r)})"),
        _item("licenses", "alert", (f"license in active use expiring within {warn_days} days",
                                   f"licenses in active use expiring within {warn_days} days"),
              expiring[expiring["calls_7d"] > 0] if len(expiring) else expiring,
              lambda r: f"{r.customer} · {r.license_id} ({r.days_left} days)"),
    ]
    return [item for item in found if item is not None]


def _item(page: str, severity: Literal["deny", "alert"], phrases: tuple[str, str], rows: pd.DataFrame,
          example) -> Item | None:
    """One item for ``rows`` (None for none): the count with the singular or plural phrase."""
    if rows.empty:
        return None
    head = f"{len(rows):,} {phrases[len(rows) > 1]}"
    shown = tuple(example(r) for r in rows.head(EXAMPLES).itertuples())
    return Item(page, severity, head, shown, max(0, len(rows) - EXAMPLES))


def _source(row) -> str:
    return row.caller_id if isinstance(row.caller_id, str) else f"unauthenticated @ {row.remote_addr}"


def _anomaly(row) -> str:
    """What is new about a key's use (``key-anomalies`` kinds)."""
    if row.kind == "new_caller":
        return f"new caller {row.caller_id}"
    if row.kind == "new_network":
        return f"from new network {row.network}"
    return f"{row.calls_per_day:g} calls a day, usually {row.usual_daily:g}"
