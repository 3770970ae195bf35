"""Audit records on their way into the spool: checked against the schema, then encoded.

Two encodings of the same records, because a conversion to Arrow has a fixed cost (~0.05 ms here)
that only larger chunks repay: Arrow record batches (converted in C++, and Parquet conversion is
then columnar work in C++ too), or validated JSON lines (checked value by value in Python, no
fixed cost), parsed back into Arrow in bulk by :func:`gateway.audit.segment.read_segment`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
import pyarrow as pa

from gateway.audit.schema import AuditRecord


class InvalidRecord(ValueError):
    """A record does not fit the audit schema: a bug in the code that built it."""


def _kind(arrow_type: pa.DataType) -> tuple[tuple[type, ...], int | None, int | None, str]:
    """Python types a value may have, its range, and the name errors use."""
    if pa.types.is_timestamp(arrow_type):
        return (int,), None, None, "integer microseconds since the epoch"
    if pa.types.is_integer(arrow_type):
        bits = arrow_type.bit_width
        return (int,), -(1 << (bits - 1)), (1 << (bits - 1)) - 1, str(arrow_type)
    if pa.types.is_list(arrow_type):
        return (list, tuple), None, None, "list<string>"
    return (str,), None, None, str(arrow_type)


def json_schema(schema: pa.Schema) -> pa.Schema:
    """In JSON lines timestamps are integers (µs since the epoch, UTC); the reader casts them back."""
    return pa.schema([pa.field(f.name, pa.int64() if pa.types.is_timestamp(f.type) else f.type) for f in schema])


@dataclass(frozen=True)
class RecordEncoder:
    """Turns AuditRecords into Arrow batches or JSON lines, refusing anything that does not fit.

    Both refuse an object that is not an :class:`AuditRecord`, a null in a required column and a
    value Arrow cannot convert; None is null in a nullable column. The JSON path checks each
    value's Python type exactly, Arrow converts what it losslessly can (``200.0`` for an integer
    column): records built by ``Exchange.record()`` never differ between the two.
    """

    schema: pa.Schema
    struct_type: pa.StructType = field(init=False)
    required: tuple[int, ...] = field(init=False)
    checks: tuple = field(init=False)

    def __post_init__(self) -> None:
        if tuple(self.schema.names) != AuditRecord._fields:
            raise ValueError("records are converted by position: the schema must be AuditRecord's")
        object.__setattr__(self, "struct_type", pa.struct(self.schema))
        object.__setattr__(self, "required", tuple(i for i, f in enumerate(self.schema) if not f.nullable))
        object.__setattr__(self, "checks", tuple((f.name, *_kind(f.type), f.nullable) for f in self.schema))
        pa.array([], type=self.struct_type)  # pyarrow's one-time time zone set-up (~0.3 s): at start, not on a request

    def arrow(self, records: Sequence[AuditRecord]) -> pa.RecordBatch:
        _require_audit_records(records)  # pyarrow would take a dict or a tuple of the right length too
        try:
            array = pa.array(records, type=self.struct_type)
        except (TypeError, ValueError, pa.ArrowException) as exc:
            raise InvalidRecord(f"audit record does not fit the schema: {exc}") from None
        batch = pa.RecordBatch.from_struct_array(array)
        for i in self.required:
            if batch.column(i).null_count:
                raise InvalidRecord(f"audit record without a value for {self.schema.names[i]!r}")
        return batch

    def json_lines(self, records: Sequence[AuditRecord]) -> bytes:
        """Checked here, value by value: the C++ reader at conversion must not meet a bad one.

        Lines are JSON objects, because the reader matches values to columns by name.
        """
        _require_audit_records(records)  # zip would stop early on a shorter tuple, and pair a dict's keys
        names, lines = self.schema.names, []
        for record in records:
            for (name, kinds, low, high, label, nullable), value in zip(self.checks, record):
                if value is None:
                    if not nullable:
                        raise InvalidRecord(f"audit record without a value for {name!r}")
                elif type(value) not in kinds or (low is not None and not low <= value <= high) or (
                        label == "list<string>" and not all(type(item) is str for item in value)):
                    raise InvalidRecord(f"audit record field {name!r} must be {label}, got {value!r:.60}")
            # dict(zip()) is record._asdict() without the method call: a little faster
            lines.append(orjson.dumps(dict(zip(names, record)), option=orjson.OPT_APPEND_NEWLINE))
        return b"".join(lines)


def _require_audit_records(records: Sequence[AuditRecord]) -> None:
    """Refuse what is not an AuditRecord (a dict, say) as invalid, so that its submit alone fails."""
    others = set(map(type, records)) - {AuditRecord}
    if others:
        raise InvalidRecord(f"audit records must be AuditRecords, got {', '.join(t.__name__ for t in others)}")
