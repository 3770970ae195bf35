"""The audit record type and its two encodings: what a gateway builds comes back unchanged."""
from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from gateway.audit import segment as segment_module
from gateway.audit.schema import AUDIT_SCHEMA, AuditRecord
from gateway.exchange import Exchange
from gateway.types import Decision, License, Outcome, Reason
from tests.audit.conftest import ENCODER, read_back


def test_an_exchange_record_round_trips_through_both_encodings() -> None:
    ex = Exchange(decision_id="d-1", request_id="r-1", now=datetime(2026, 1, 1, 12, tzinfo=UTC), received_ns=1_000,
                  instance="test-w0", environment="prod", remote_addr="10.0.0.7", endpoint="check",
                  policy_version="a1b2c3d4e5f6", auth_method="hmac", caller_id="billing", trace_id="t-1",
                  feature="export", user_id="u-1", quantity=2, key_fp="0123456789abcdef", decided_ns=81_000)
    lic = License(license_id="lic_A", key_hash="0" * 64, customer="acme", product="suite", tier="pro",
                  expires_at=datetime(2026, 1, 20, tzinfo=UTC))
    ex.decide(lic, Decision(Outcome.ALERT, Reason.EXPIRING_SOON, "expires soon", alerts=(Reason.EXPIRING_SOON,),
                            seats_used=3, seats_limit=25, quota_used=7, quota_limit=1000))
    record = ex.record()
    assert type(record) is AuditRecord and (record.latency_us, record.error) == (80, None)
    from_arrow = pa.Table.from_batches([ENCODER.arrow([record])])
    from_json = segment_module._from_json([pa.py_buffer(ENCODER.json_lines([record]))], AUDIT_SCHEMA)
    assert read_back(from_arrow) == read_back(from_json) == [record]
