"""Shared audit fixtures: realistic records, an audit key, and a sink over a temp data dir."""
from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.manifest import Manifest, sha256_file
from gateway.audit.parquet import make_dirs, write_parquet
from gateway.audit.records import RecordEncoder
from gateway.audit.schema import AUDIT_SCHEMA, AuditRecord
from gateway.audit.spool import Spool
from gateway.audit.writer import DurableSink, SinkConfig

T0 = 1_767_268_800_000_000  # 2026-01-01T12:00:00Z in microseconds
HOUR = 3_600_000_000
ENCODER = RecordEncoder(AUDIT_SCHEMA)


def make_record(i: int = 0, ts: int = T0, **overrides: object) -> AuditRecord:
    decision_id = str(uuid.uuid4())
    return AuditRecord(
        ts=ts, decision_id=decision_id, request_id=decision_id, instance="test-w0",
        environment="test", caller_id="billing", auth_method="hmac", auth_error=None,
        remote_addr="10.0.0.7", endpoint="check", http_status=200, decision="allow",
        reason="VALID", alerts=["EXPIRING_SOON"] if i % 5 == 0 else [],
        license_id="lic_ABCDEFGHIJKLMNOPQRST", key_fp="0123456789abcdef", customer="acme",
        product="analytics-suite", tier="pro", user_id=f"u-{i}", feature="export",
        quantity=i % 3, seats_used=12, seats_limit=25, quota_used=None, quota_limit=None,
        expires_at=T0 + 30 * 24 * HOUR, policy_version="a1b2c3d4e5f6", latency_us=80 + i % 50,
        trace_id=None, error=None,
    )._replace(**overrides)


def read_back(table: pa.Table) -> list[AuditRecord]:
    """The rows of a table read back as records, timestamps as µs integers again."""
    ints = pa.schema([f.with_type(pa.int64()) if pa.types.is_timestamp(f.type) else f for f in table.schema])
    return [AuditRecord(**row) for row in table.cast(ints).to_pylist()]


def add_file(audit: Path, manifest: Manifest, hour: int, name: str, rows: int = 3) -> str:
    """One real Parquet file in the hour ``hour`` hours after 2026-01-01 12:00 (any hour, earlier
    or later, that the caller counts from there), listed in the manifest."""
    at = datetime.fromtimestamp((T0 + hour * HOUR) / 1_000_000, timezone.utc)
    path = f"date={at:%Y-%m-%d}/hour={at:%H}/{name}.parquet"
    make_dirs((audit / path).parent)
    table = pa.Table.from_batches([ENCODER.arrow([make_record(i, ts=T0 + hour * HOUR + i) for i in range(rows)])])
    facts = write_parquet([table], AUDIT_SCHEMA, audit / path)
    manifest.append(path=path, sha256=sha256_file(audit / path), rows=facts.rows,
                    min_ts=facts.min_ts, max_ts=facts.max_ts)
    return path


async def make_segment(directory: Path, batches: list[list[AuditRecord]]) -> Path:
    """A real closed spool segment, one group commit per batch."""
    directory.mkdir(parents=True, exist_ok=True)
    rotated: list[Path] = []
    spool = Spool(directory, AUDIT_SCHEMA, rotate_s=3600, rotate_bytes=1 << 30, commit_interval_s=0,
                  on_rotated=rotated.append)
    spool.start()
    for batch in batches:
        await spool.append(batch)
    await spool.close()
    return rotated[0]


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def config(tmp_path: Path) -> SinkConfig:
    return SinkConfig(spool_dir=tmp_path / "spool" / "test-w0", audit_dir=tmp_path / "audit", instance="test-w0")


@pytest.fixture
def make_sink(key: Ed25519PrivateKey, config: SinkConfig):
    def make(**changes: object) -> DurableSink:
        return DurableSink(replace(config, **changes), key)
    return make
