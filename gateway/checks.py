"""Strict parsing of check request bodies (SPEC §4): unknown fields and wrong types are refused.

Parsing is a pure function so the HTTP adapter, the embedded Enforcer and the property tests
share exactly one definition of a well-formed check.
"""
from __future__ import annotations

import re
from typing import Any, NamedTuple

MAX_BATCH = 100
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}")
_FIELDS = {"license_key", "user_id", "feature", "product", "environment", "quantity", "request_id"}


class InvalidRequest(ValueError):
    """The body is not a well-formed check; the message is safe to return to the caller."""


def is_text(value: str) -> bool:
    """Whether a string is valid Unicode. JSON escapes can spell lone surrogates (``"\\ud800"``),
    which no UTF-8 encoder accepts: such a string could be neither hashed nor audited."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(value: str) -> str:
    return value if is_text(value) else value.encode("utf-8", "backslashreplace").decode("utf-8")


class CheckBody(NamedTuple):
    """A well-formed check body (a NamedTuple: built on every check, cheaper than a frozen
    dataclass, equally immutable)."""

    license_key: str
    feature: str
    user_id: str | None = None
    product: str | None = None
    environment: str | None = None
    quantity: int = 0
    request_id: str | None = None


def parse_check(doc: Any) -> CheckBody:
    if not isinstance(doc, dict):
        raise InvalidRequest("a check must be a JSON object")
    if not doc.keys() <= _FIELDS:
        unknown = doc.keys() - _FIELDS
        raise InvalidRequest(f"unknown field(s): {', '.join(sorted(map(_shown, unknown)))[:200]}")
    for name in ("license_key", "feature"):
        if name not in doc:
            raise InvalidRequest(f"missing required field: {name}")
    key = doc["license_key"]
    if not isinstance(key, str) or not 1 <= len(key) <= 256 or not is_text(key):
        raise InvalidRequest("license_key must be a string of 1-256 characters")
    feature = _name(doc, "feature")
    user_id, product, environment, request_id = (_optional(doc, "user_id"), _optional(doc, "product"),
                                                  _optional(doc, "environment"), _optional(doc, "request_id"))
    quantity = doc.get("quantity", 0)
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 0 <= quantity <= 1_000_000_000:
        raise InvalidRequest("quantity must be an integer from 0 to 1000000000")
    return CheckBody(key, feature, user_id, product, environment, quantity, request_id)


def _optional(doc: dict, name: str) -> str | None:
    return None if doc.get(name) is None else _name(doc, name)


def _name(doc: dict, name: str) -> str:
    value = doc[name]
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidRequest(f"{name} must be a string of 1-128 letters, digits or ._:@/+- characters")
    return value


def parse_batch(doc: Any) -> list[Any]:
    """The ``checks`` list of a batch; each element is parsed (and may fail) on its own."""
    if not isinstance(doc, dict) or set(doc) != {"checks"}:
        raise InvalidRequest('a batch must be a JSON object with exactly one field, "checks"')
    checks = doc["checks"]
    if not isinstance(checks, list) or not 1 <= len(checks) <= MAX_BATCH:
        raise InvalidRequest(f"checks must be a list of 1-{MAX_BATCH} check objects")
    return checks


def lenient_fields(doc: Any) -> dict[str, Any]:
    """Best-effort fields of a refused body, for its audit record (strings only, truncated)."""
    if not isinstance(doc, dict):
        return {}
    return {k: v[:128] for k in ("feature", "user_id", "product", "request_id")
            if isinstance(v := doc.get(k), str) and is_text(v)}
