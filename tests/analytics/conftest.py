"""A planted data directory: real Parquet audit files and registry snapshots in which every case
the reports must find (and must not find) is put on purpose, around a fixed ``NOW``."""
from __future__ import annotations

import asyncio
import itertools
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.schema import AUDIT_SCHEMA, AuditRecord
from gateway.audit.writer import DurableSink, SinkConfig
from gateway.snapshot import write_callers_snapshot, write_licenses_snapshot

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
_ids = itertools.count()


def record(ts: datetime, **fields: Any) -> dict[str, Any]:
    """One audit record: an allowed check unless ``fields`` say otherwise."""
    n = next(_ids)
    base = {
        "ts": ts, "decision_id": f"d-{n}", "request_id": f"d-{n}", "instance": "gw-test-w0",
        "environment": "prod", "caller_id": "web", "auth_method": "hmac", "auth_error": None,
        "remote_addr": "10.0.0.1", "endpoint": "check", "http_status": 200, "decision": "allow",
        "reason": "VALID", "alerts": [], "license_id": None, "key_fp": None, "customer": None,
        "product": "suite", "tier": None, "user_id": None, "feature": "export", "quantity": 0,
        "seats_used": None, "seats_limit": None, "quota_used": None, "quota_limit": None,
        "expires_at": None, "policy_version": "abcdefabcdef", "latency_us": 250, "trace_id": None,
        "error": None,
    }
    return {**base, **fields}


def licensed(ts: datetime, lic: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A check that presented ``lic``'s key."""
    return record(ts, license_id=lic["license_id"], key_fp=lic["key_fp"], customer=lic["customer"],
                  tier=lic["tier"], expires_at=lic["expires_at"], **fields)


def refused(ts: datetime, status: int, reason: str, **fields: Any) -> dict[str, Any]:
    return record(ts, http_status=status, decision="deny", reason=reason, feature=None, **fields)


def write_audit(data_dir: Path, records: list[dict[str, Any]], name: str = "gw-test-w0-1") -> list[Path]:
    """Write records hive-partitioned by hour, as the gateway lays them out."""
    by_hour: dict[datetime, list[dict[str, Any]]] = {}
    for rec in records:
        by_hour.setdefault(rec["ts"].replace(minute=0, second=0, microsecond=0), []).append(rec)
    paths = []
    for hour, rows in sorted(by_hour.items()):
        folder = data_dir / "audit" / f"date={hour:%Y-%m-%d}" / f"hour={hour:%H}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.parquet"
        pq.write_table(pa.Table.from_pylist(sorted(rows, key=lambda r: r["ts"]), schema=AUDIT_SCHEMA), path)
        paths.append(path)
    return paths


def license_row(license_id: str, *, expires_at: datetime | None, status: str = "active",
                created_at: datetime = NOW - 400 * DAY, tier: str = "pro") -> dict[str, Any]:
    return {
        "license_id": license_id, "key_fp": f"fp-{license_id}", "customer": f"cust-{license_id}",
        "product": "suite", "tier": tier, "status": status, "features": [], "seats_limit": None,
        "environments": ["*"], "starts_at": created_at, "expires_at": expires_at,
        "created_at": created_at, "updated_at": created_at, "metadata": "{}",
    }


LICENSES = {
    "soon": license_row("lic_soon", expires_at=NOW + 5 * DAY),
    "later": license_row("lic_later", expires_at=NOW + 200 * DAY),
    "perpetual": license_row("lic_perpetual", expires_at=None, tier="enterprise"),
    "suspended_soon": license_row("lic_suspended_soon", expires_at=NOW + 20 * DAY, status="suspended"),
    "stale": license_row("lic_stale", expires_at=NOW + 365 * DAY),
    "never": license_row("lic_never", expires_at=NOW + 365 * DAY, created_at=NOW - 100 * DAY),
    "new": license_row("lic_new", expires_at=NOW + 365 * DAY, created_at=NOW - 2 * DAY),
    "revoked": license_row("lic_revoked", expires_at=NOW + 10 * DAY, status="revoked"),
    "expired": license_row("lic_expired", expires_at=NOW - 20 * DAY),
    "seats": license_row("lic_seats", expires_at=NOW + 300 * DAY, tier="free"),
}
GONE_FP = "fp-of-a-deleted-license"
PROBE_FPS = [f"probe-{i:02d}" for i in range(12)]
LATENCIES = list(range(1, 101))  # one hour of decisions taking 1..100 µs


def planted_records() -> list[dict[str, Any]]:
    lic = LICENSES
    recent = NOW - 2 * HOUR
    rows = [
        # in use: two users of lic_soon this week, one more call 10 days ago (outside 7 days)
        licensed(NOW - 1 * DAY, lic["soon"], user_id="u1", feature="export"),
        licensed(NOW - 3 * DAY, lic["soon"], user_id="u2", feature="export", decision="alert",
                 reason="EXPIRING_SOON", alerts=["EXPIRING_SOON"]),
        licensed(NOW - 10 * DAY, lic["soon"], user_id="u3", feature="export"),
        licensed(NOW - 1 * DAY, lic["later"], user_id="u1", feature="reports.basic"),
        licensed(NOW - 4 * DAY, lic["perpetual"], user_id="u9", feature="reports.basic"),
        licensed(NOW - 5 * DAY, lic["suspended_soon"], decision="deny", reason="LICENSE_SUSPENDED"),
        # lic_stale: last allowed 60 days ago; a denial since does not make it used
        licensed(NOW - 60 * DAY, lic["stale"], user_id="u5", feature="export"),
        licensed(NOW - 6 * DAY, lic["stale"], decision="deny", reason="FEATURE_NOT_ENTITLED", feature="admin"),
        # zombies: a revoked key and an expired key still presented, an unknown key kept in a config
        *[licensed(recent - i * HOUR, lic["revoked"], caller_id="legacy", decision="deny",
                   reason="LICENSE_REVOKED") for i in range(4)],
        *[licensed(NOW - (i + 1) * DAY, lic["expired"], caller_id="batch", decision="deny",
                   reason="LICENSE_EXPIRED") for i in range(2)],
        *[record(NOW - (i + 1) * DAY, caller_id="legacy", key_fp=GONE_FP, decision="deny",
                 reason="KEY_NOT_FOUND") for i in range(5)],
        # a caller probing for keys: 12 distinct unknown keys within the last hours
        *[record(recent + i * timedelta(minutes=1), caller_id="scanner", remote_addr="10.6.6.6",
                 key_fp=fp, decision="deny", reason="KEY_NOT_FOUND") for i, fp in enumerate(PROBE_FPS)],
        # unsigned traffic and an out-of-scope caller in the last 24 hours; one 401 from 3 days ago
        *[refused(recent + i * timedelta(minutes=5), 401, "UNAUTHENTICATED", caller_id=None,
                  auth_method="hmac", auth_error="bad_signature", remote_addr="203.0.113.7") for i in range(3)],
        *[refused(recent, 401, "UNAUTHENTICATED", caller_id=None, auth_method="none",
                  auth_error="missing_credentials", remote_addr="198.51.100.1") for _ in range(2)],
        refused(recent, 403, "CALLER_NOT_AUTHORIZED", caller_id="web"),
        refused(NOW - 3 * DAY, 401, "UNAUTHENTICATED", caller_id=None, auth_error="bad_signature",
                remote_addr="203.0.113.7"),
        # seats: lic_seats (limit 10) went from 5 seats to full (a refusal) and is now at 7
        licensed(NOW - 9 * DAY, lic["seats"], user_id="s1", feature="reports.basic", seats_used=5, seats_limit=10),
        licensed(NOW - 3 * DAY, lic["seats"], user_id="s3", feature="reports.basic", decision="deny",
                 reason="SEAT_LIMIT_EXCEEDED", seats_used=10, seats_limit=10),
        licensed(NOW - 2 * DAY, lic["seats"], user_id="s2", feature="reports.basic", seats_used=7, seats_limit=10),
        # a future record (after NOW) that no report may count
        licensed(NOW + HOUR, lic["later"], user_id="u1", feature="export"),
    ]
    latency_hour = NOW - 30 * HOUR
    rows += [licensed(latency_hour + i * timedelta(seconds=30), lic["perpetual"], user_id="lat",
                      feature="api.calls", latency_us=v) for i, v in enumerate(LATENCIES)]
    return rows


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    write_audit(data, planted_records())
    write_licenses_snapshot(data, LICENSES.values())
    write_callers_snapshot(data, [{"caller_id": c, "key_ids": [f"pk_{c}"], "admin": False}
                                  for c in ("web", "legacy", "batch", "scanner")])
    return data


def _micros(value: Any) -> Any:
    return value if not isinstance(value, datetime) else int(value.timestamp()) * 1_000_000 + value.microsecond


@pytest.fixture
def written(tmp_path: Path) -> Path:
    """The planted records, each moved by a few microseconds, written by the real audit writer
    (spool, Parquet per UTC hour, manifest) as two workers of one host, with the snapshots."""
    data = tmp_path / "written"
    records = [AuditRecord(**{name: _micros(value) for name, value in rec.items()})._replace(ts=_micros(rec["ts"]) + i % 997)
               for i, rec in enumerate(planted_records())]

    async def write() -> None:
        key = Ed25519PrivateKey.generate()
        for worker in (0, 1):
            instance = f"gw-test-w{worker}"
            config = SinkConfig(spool_dir=data / "spool" / instance, audit_dir=data / "audit", instance=instance)
            async with DurableSink(config, key) as sink:
                for start in range(worker * 64, len(records), 128):
                    await sink.submit([r._replace(instance=instance) for r in records[start:start + 64]])

    asyncio.run(write())
    write_licenses_snapshot(data, LICENSES.values())
    write_callers_snapshot(data, [{"caller_id": c, "key_ids": [f"pk_{c}"], "admin": False}
                                  for c in ("web", "legacy", "batch", "scanner")])
    return data


@pytest.fixture
def empty_data(tmp_path: Path) -> Path:
    data = tmp_path / "empty"
    data.mkdir()
    return data
