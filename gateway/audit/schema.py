"""The audit record contract (SPEC §5): one Arrow schema shared by writer, analytics and tests.

Columns may only be appended at the end, never renamed or reordered: readers use
``union_by_name`` and old files must stay readable.
"""
from __future__ import annotations

from collections import namedtuple

import pyarrow as pa

_TS = pa.timestamp("us", tz="UTC")

AUDIT_SCHEMA = pa.schema(
    [
        pa.field("ts", _TS, nullable=False),
        pa.field("decision_id", pa.string(), nullable=False),
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("instance", pa.string(), nullable=False),
        pa.field("environment", pa.string(), nullable=False),
        pa.field("caller_id", pa.string()),
        pa.field("auth_method", pa.string(), nullable=False),
        pa.field("auth_error", pa.string()),
        pa.field("remote_addr", pa.string(), nullable=False),
        pa.field("endpoint", pa.string(), nullable=False),
        pa.field("http_status", pa.int16(), nullable=False),
        pa.field("decision", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("alerts", pa.list_(pa.string()), nullable=False),
        pa.field("license_id", pa.string()),
        pa.field("key_fp", pa.string()),
        pa.field("customer", pa.string()),
        pa.field("product", pa.string()),
        pa.field("tier", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("feature", pa.string()),
        pa.field("quantity", pa.int64(), nullable=False),
        pa.field("seats_used", pa.int32()),
        pa.field("seats_limit", pa.int32()),
        pa.field("quota_used", pa.int64()),
        pa.field("quota_limit", pa.int64()),
        pa.field("expires_at", _TS),
        pa.field("policy_version", pa.string(), nullable=False),
        pa.field("latency_us", pa.int32(), nullable=False),
        pa.field("trace_id", pa.string()),
        pa.field("error", pa.string()),
    ]
)

COLUMNS: tuple[str, ...] = tuple(AUDIT_SCHEMA.names)

AuditRecord = namedtuple("AuditRecord", COLUMNS, defaults=(None,) * len(COLUMNS))
AuditRecord.__doc__ = """One audit record: a tuple of the schema's columns, in schema order.

A tuple because it is cheap to build on the hot path and pyarrow converts tuples into a struct
array positionally, in about a third less time than dicts. A value left out is None, i.e. null
(the encoder refuses a null in a required column). ``ts`` and ``expires_at`` are integer
microseconds since the Unix epoch (UTC).
"""
