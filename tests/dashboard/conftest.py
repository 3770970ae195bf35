"""Dashboard fixtures: a small synthetic audit history (real Parquet, laid out as the gateway
writes it) and an empty data directory, each shared by the module's tests."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from analytics.synth import generate

# The history ends at the start of the current hour, so "the last 7 days" is full of records.
HISTORY = dict(days=10, rows=20_000, licenses=60, seed=11)


@pytest.fixture(scope="session")
def history(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dashboard") / "data"
    generate(root, end=datetime.now(timezone.utc), **HISTORY)
    return root


@pytest.fixture(scope="session")
def empty_data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dashboard-empty") / "data"


@pytest.fixture(scope="session")
def troubled(tmp_path_factory) -> Path:
    """A data directory (real Parquet, written as the gateway lays it out) with one planted case of
    each kind of trouble the Overview's attention list names, and nothing else wrong: a license in
    use expiring in 10 days, a quota burning towards its limit, a license over its seat limit, a
    revoked key still presented, a caller probing keys, and a caller whose deny rate jumped (whose
    calls to a quiet license are also far above its usual)."""
    from tests.analytics.conftest import license_row, licensed, record, write_audit
    from gateway.snapshot import write_callers_snapshot, write_licenses_snapshot

    root = tmp_path_factory.mktemp("troubled") / "data"
    now = datetime.now(timezone.utc).replace(microsecond=0)
    hour, day = timedelta(hours=1), timedelta(days=1)
    lic = {name: license_row(f"lic_{name}", expires_at=now + days * day) | {"customer": customer}
           for name, customer, days in (("expiring", "acme", 10), ("quota", "hooli", 300), ("seats", "wayne", 300),
                                        ("revoked", "umbrella", 300), ("healthy", "stark", 300))}
    lic["revoked"]["status"] = "revoked"
    write_licenses_snapshot(root, list(lic.values()))
    write_callers_snapshot(root, [])
    start = now - 40 * hour
    records = [licensed(now - 2 * hour, lic["expiring"], reason="EXPIRING_SOON", decision="alert"),
               licensed(now - 2 * hour, lic["seats"], seats_used=12, seats_limit=10, feature="dashboard.view"),
               licensed(now - 3 * hour, lic["revoked"], decision="deny", reason="LICENSE_REVOKED", caller_id="legacy")]
    month = now.replace(day=1, hour=0, minute=0, second=0)
    used = 998  # of 1000 this month: the last reading reaches the limit, so it runs out whatever the day
    records += [licensed(max(month, now - 2 * hour) + i * timedelta(minutes=1), lic["quota"], quantity=1,
                         quota_used=used + i, quota_limit=1000) for i in range(3)]
    records += [record(now - hour + i * timedelta(seconds=10), caller_id="scanner", decision="deny",
                       reason="KEY_NOT_FOUND", key_fp=f"probe{i:04d}") for i in range(12)]
    for i in range(60):  # caller batch: all allowed the day before, mostly refused in the last 24 hours
        records.append(licensed(start + i * timedelta(minutes=5), lic["healthy"], caller_id="batch"))
        records.append(licensed(now - 20 * hour + i * timedelta(minutes=5), lic["healthy"], caller_id="batch",
                                **({"decision": "deny", "reason": "FEATURE_NOT_ENTITLED"} if i % 3 else {})))
    write_audit(root, records)
    return root
