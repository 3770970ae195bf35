"""The quota report over planted Parquet, read by real DuckDB through the report registry: the
latest count of each metered license and feature in the window, its alerts and refusals, the
fullest first; unmetered, unlimited, unlicensed, old and future records never appear."""
from __future__ import annotations

from pathlib import Path

import pytest

from analytics.db import connect
from analytics.registry import run_report

from .conftest import DAY, HOUR, LICENSES, NOW, licensed, record, write_audit

SOON, LATER, SEATS = LICENSES["soon"], LICENSES["later"], LICENSES["seats"]


def metered(ts, lic, feature: str, used: int, limit: int | None, reason: str = "VALID", **fields):
    decision = {"VALID": "allow", "QUOTA_EXCEEDED": "deny"}.get(reason, "alert")
    return licensed(ts, lic, feature=feature, quantity=1, quota_used=used, quota_limit=limit, decision=decision,
                    reason=reason, alerts=[] if decision != "alert" else [reason], **fields)


@pytest.fixture
def con(tmp_path: Path):
    data = tmp_path / "data"
    write_audit(data, [
        # lic_soon, export: filling up, warned, then refused; a refusal 40 days ago is outside the window
        metered(NOW - 40 * DAY, SOON, "export", 10, 10, "QUOTA_EXCEEDED"),
        metered(NOW - 5 * DAY, SOON, "export", 4, 10),
        metered(NOW - 2 * DAY, SOON, "export", 9, 10, "QUOTA_NEAR_LIMIT"),
        metered(NOW - 30 * HOUR, SOON, "export", 10, 10, "QUOTA_EXCEEDED"),
        # lic_soon, api.calls: a new period began; the latest count is what counts, not the largest
        metered(NOW - 10 * DAY, SOON, "api.calls", 80, 100),
        metered(NOW - 2 * DAY, SOON, "api.calls", 5, 100),
        # lic_later, export: over its quota within the tolerance; a record after NOW is not read
        metered(NOW - 4 * HOUR, LATER, "export", 12, 10, "QUOTA_OVERAGE"),
        metered(NOW + HOUR, LATER, "export", 1, 10),
        # lic_seats, export: full like lic_soon's export but never refused, so after it
        metered(NOW - 6 * DAY, SEATS, "export", 10, 10),
        # controls: unmetered, unlimited (limit 0), no license, and metered but only long ago
        metered(NOW - DAY, LICENSES["perpetual"], "export", 3, None),
        metered(NOW - DAY, LICENSES["stale"], "export", 3, 0),
        record(NOW - DAY, feature="export", quota_used=7, quota_limit=10, decision="deny", reason="KEY_NOT_FOUND"),
        metered(NOW - 35 * DAY, LICENSES["never"], "export", 9, 10),
    ])
    connection = connect(data)
    yield connection
    connection.close()


def row(lic: dict, feature: str, used: int, limit: int, pct: float, alerts: int, denials: int, last_seen) -> dict:
    return {"license_id": lic["license_id"], "customer": lic["customer"], "tier": lic["tier"], "feature": feature,
            "quota_used": used, "quota_limit": limit, "utilisation_pct": pct, "quota_alerts": alerts,
            "quota_denials": denials, "last_seen": last_seen}


def test_quota_reports_the_latest_count_of_each_metered_license_and_feature_fullest_first(con):
    assert run_report(con, "quota", now=NOW).to_pylist() == [
        row(LATER, "export", 12, 10, 120.0, 1, 0, NOW - 4 * HOUR),
        row(SOON, "export", 10, 10, 100.0, 1, 1, NOW - 30 * HOUR),
        row(SEATS, "export", 10, 10, 100.0, 0, 0, NOW - 6 * DAY),
        row(SOON, "api.calls", 5, 100, 5.0, 0, 0, NOW - 2 * DAY),
    ]


def test_quota_window_is_a_parameter(con):
    assert run_report(con, "quota", now=NOW, days=1).to_pylist() == [
        row(LATER, "export", 12, 10, 120.0, 1, 0, NOW - 4 * HOUR)]
    longer = run_report(con, "quota", now=NOW, days=45).to_pylist()
    assert [(r["license_id"], r["feature"], r["quota_denials"]) for r in longer] == [
        ("lic_later", "export", 0), ("lic_soon", "export", 2), ("lic_seats", "export", 0),
        ("lic_never", "export", 0), ("lic_soon", "api.calls", 0)]
