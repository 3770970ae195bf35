"""The reports: each a ``reports/<name>.sql`` file with named ``$parameters``, registered here with
a title, a description and its parameters' defaults. The CLI, the dashboard and analysts all go
through ``REPORTS`` and ``run_report``, so a report means the same thing everywhere.

Every report takes ``now`` (default: the current time) so that its windows can be pinned, by
tests and by anyone re-running last Monday's report. Every report reads all gateway hosts' records
as one history, or only those of some hosts (``run_report(..., hosts=[...])``: the views'
``hosts`` filter).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping, Sequence

import duckdb
import pyarrow as pa

from analytics.db import query

REPORTS_DIR = Path(__file__).with_name("reports")


class ReportError(ValueError):
    """An unknown report or a bad parameter; the message says what would have been accepted."""


@dataclass(frozen=True)
class Param:
    name: str
    default: Any  # its type is the parameter's type; None only for ``now``
    description: str
    choices: tuple[str, ...] = ()

    def parse(self, text: str) -> Any:
        """This parameter's value written as text (command line, query string)."""
        try:
            if self.name == "now":
                return datetime.fromisoformat(text)
            return int(text) if isinstance(self.default, int) else text
        except ValueError:
            kind = "an ISO 8601 time" if self.name == "now" else type(self.default).__name__
            raise ReportError(f"{self.name}: cannot read {text!r} as {kind}") from None


@dataclass(frozen=True)
class Report:
    name: str
    title: str
    description: str
    params: tuple[Param, ...] = field(default=())
    reads_rollups: bool = False  # reads summary() or license_days() & co (views.sql), which rollups make fast

    def parse(self, texts: Mapping[str, str]) -> dict[str, Any]:
        """Parameter values written as text, typed; names the report does not take are passed
        through for ``bind`` to refuse."""
        known = {p.name: p for p in self.params}
        return {name: known[name].parse(text) if name in known else text for name, text in texts.items()}

    @cached_property
    def sql(self) -> str:
        return (REPORTS_DIR / f"{self.name}.sql").read_text(encoding="utf-8")

    def bind(self, **values: Any) -> dict[str, Any]:
        """Every parameter's value: given, else default; checked, so a typo is an error, not a
        silently ignored option."""
        known = {p.name: p for p in self.params}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ReportError(f"report {self.name!r} has no parameter {', '.join(unknown)} "
                              f"(it takes: {', '.join(known)})")
        bound = {}
        for p in self.params:
            value = values.get(p.name)
            bound[p.name] = p.default if value is None else value
            _check(self.name, p, bound[p.name])
        if "now" in bound:
            now = bound["now"] or datetime.now(timezone.utc)
            bound["now"] = now if now.tzinfo else now.replace(tzinfo=timezone.utc)
        return bound


def _check(report: str, p: Param, value: Any) -> None:
    if p.name == "now":
        if value is not None and not isinstance(value, datetime):
            raise ReportError(f"{report}: now must be a datetime, got {value!r}")
        return
    if type(value) is not type(p.default):
        raise ReportError(f"{report}: {p.name} must be {type(p.default).__name__}, got {value!r}")
    if isinstance(value, int) and value < 1:
        raise ReportError(f"{report}: {p.name} must be at least 1, got {value}")
    if p.choices and value not in p.choices:
        raise ReportError(f"{report}: {p.name} must be one of {', '.join(p.choices)}, got {value!r}")


NOW = Param("now", None, "the moment the report is as of (default: the current time; naive = UTC)")
BUCKET = Param("bucket", "hour", "time bucket, UTC", ("hour", "day"))
LAST_7_DAYS = Param("days", 7, "look back this many days")
LAST_30_DAYS = Param("days", 30, "look back this many days")
LAST_24_HOURS = Param("hours", 24, "look back this many hours")
CUSTOMER = Param("customer", "", "the customer, as the registry names it")


REPORTS: dict[str, Report] = {
    r.name: r
    for r in (
        Report("expiring", "Licenses expiring soon",
               "Licenses not revoked that expire within `days`, soonest first, with days left, last "
               "seen, active users and calls over the last 7 days.",
               (Param("days", 30, "expiring within this many days"), NOW), reads_rollups=True),
        Report("stale-keys", "Stale and zombie keys",
               "Active, unexpired licenses whose key got no allow/alert within `days` (kind stale, or "
               "never_used when issued earlier than that), and keys still presented although revoked, "
               "expired or unknown (zombies), with counts and callers.",
               (Param("days", 30, "unused for this many days; zombies presented within it"),
                Param("min_calls", 3, "an unknown key is a zombie once presented this many times"), NOW), reads_rollups=True),
        Report("unauthorized", "Unauthorized callers",
               "401/403/429 answers grouped by caller, remote address and auth_error, and callers "
               "probing for keys (many distinct unknown keys), with counts and first/last seen.",
               (LAST_24_HOURS,
                Param("probe_keys", 10, "distinct unknown keys that make a caller a key prober"), NOW)),
        Report("trends", "Decision trends",
               "Decisions per time bucket by decision and reason.",
               (BUCKET, LAST_7_DAYS, NOW), reads_rollups=True),
        Report("latency", "Decision latency",
               "p50/p95/p99 and max of latency_us per time bucket (within 0.5 % above 1 ms).",
               (BUCKET, LAST_7_DAYS, NOW), reads_rollups=True),
        Report("features", "Feature usage",
               "Checks by feature and tier: allowed, alerted, denied, deny % and licenses asking.",
               (LAST_30_DAYS, NOW), reads_rollups=True),
        Report("seats", "Seat utilisation",
               "Seat-limited licenses: the latest seats used against the limit, calls, seat refusals "
               "and overages; the fullest first.",
               (LAST_30_DAYS, NOW), reads_rollups=True),
        Report("hosts", "Gateway hosts",
               "Decisions per gateway host (an instance without its worker suffix) over the last `days`, "
               "with the first and last hour it decided in.",
               (LAST_30_DAYS, NOW), reads_rollups=True),
        Report("customers", "Customers",
               "Every customer of the registry with its licenses (all and active) and its decisions and "
               "denials over the last `days`; the busiest first.",
               (LAST_7_DAYS, NOW)),
        Report("customer", "One customer's licenses",
               "The licenses of `customer`: status, expiry and days left, seats in use against the limit, "
               "calls, denials and last seen over the last `days`; the soonest expiry first.",
               (CUSTOMER, LAST_7_DAYS, NOW)),
        Report("customer-activity", "One customer's activity",
               "The decisions of `customer` per bucket by license, feature, outcome, reason, caller and "
               "environment, with the highest seats and quota counted against their limits.",
               (CUSTOMER, BUCKET, LAST_7_DAYS, NOW)),
        Report("deny-jumps", "Deny-rate jumps",
               "Callers and gateway hosts whose deny rate over the last `hours` rose by at least `points` "
               "percentage points against the `hours` before, with at least `min_calls` decisions in each.",
               (LAST_24_HOURS, Param("points", 10, "rise in percentage points that counts as a jump"),
                Param("min_calls", 50, "decisions needed in each period to judge a rate"), NOW)),
        # Answers rather than charts: what runs out, fills up, looks leaked, or is due first.
        Report("quota-forecast", "Quota forecast",
               "Metered licenses per feature: units used so far in the current period (daily or monthly, "
               "read from the counter), the daily burn, the projected exhaustion and whether it comes "
               "before the period ends (runs_out); the soonest first.",
               (NOW,), reads_rollups=True),
        Report("seat-pressure", "Seat pressure",
               "Seat-limited licenses: distinct active users per day over the last `days`, their trend, "
               "and the day the trend reaches the seat limit (at_risk within `horizon` days); the soonest first.",
               (LAST_30_DAYS, Param("horizon", 90, "at risk when the limit is reached within this many days"), NOW),
               reads_rollups=True),
        Report("key-anomalies", "Key anomalies",
               "License keys presented in the last `hours` by a caller or from a remote network (IPv4 /24, "
               "IPv6 /64) not seen with them in the `days` before, or at `factor` times their usual daily "
               "calls: the signal of a leaked key.",
               (LAST_24_HOURS, LAST_30_DAYS,
                Param("factor", 5, "calls per day at least this many times the usual make a volume finding"),
                Param("min_calls", 50, "and at least this many calls in the last `hours`"), NOW), reads_rollups=True),
        Report("renewals", "Renewals due",
               "Licenses not revoked that expire within `days`, ranked by their use over the last "
               "`usage_days` (calls, active users, features), so the busiest are renewed first.",
               (Param("days", 30, "expiring within this many days"),
                Param("usage_days", 30, "use counted over this many days"), NOW), reads_rollups=True),
        # The dashboard's: its KPIs, its quota chart and its audit explorer's pages.
        Report("overview", "Headline numbers",
               "Decisions, denials and deny %, alerts, p99 latency and auth failures (401) over the last "
               "`hours` and the `hours` before them (period current / previous).",
               (Param("hours", 24, "length of each period"), NOW), reads_rollups=True),
        Report("quota", "Quota utilisation",
               "Metered licenses: latest units used against the quota per feature, quota alerts and "
               "refusals; the fullest first.",
               (LAST_30_DAYS, NOW), reads_rollups=True),
        Report("audit-page", "Audit records",
               "One page of audit records, newest first, filtered by decision, reason, caller, license "
               "id or customer and feature, with the number of matching records.",
               (LAST_24_HOURS,
                Param("decision", "any", "only this decision", ("any", "allow", "alert", "deny")),
                Param("reason", "", "only this reason code ('' = any)"),
                Param("caller", "", "only this caller id ('' = any)"),
                Param("license", "", "only this license id or customer ('' = any)"),
                Param("feature", "", "only this feature ('' = any)"),
                Param("page", 1, "page number, from 1"),
                Param("page_size", 100, "records per page"), NOW)),
    )
}


def get_report(name: str) -> Report:
    try:
        return REPORTS[name]
    except KeyError:
        raise ReportError(f"unknown report {name!r}; reports: {', '.join(REPORTS)}") from None


def run_report(con: duckdb.DuckDBPyConnection, name: str, hosts: Sequence[str] = (), **params: Any) -> pa.Table:
    """Run a registered report on a connection from ``analytics.db.connect``. Parameters not
    given (or None) take their defaults. ``hosts``: only those gateway hosts' records (default:
    every host's); the connection shows every host's again afterwards."""
    report = get_report(name)
    bound = report.bind(**params)
    if not hosts:
        return query(con, report.sql, bound)
    con.execute("SET VARIABLE hosts = ?::VARCHAR[]", [list(hosts)])
    try:
        return query(con, report.sql, bound)
    finally:
        con.execute("SET VARIABLE hosts = NULL::VARCHAR[]")
