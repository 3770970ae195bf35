"""Load and validate ``policy.toml`` into a :class:`~gateway.types.Policy`.

Errors name the file, the tier and the field so an admin can fix a broken policy at once; a
policy that fails validation is never half-applied (callers keep the previous one).
"""
from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Any, Mapping

from gateway.types import Period, Policy, Quota, Tier

_GLOBALS = {
    "expiring_warn_days": (int, 30),
    "grace_days": (int, 0),
    "seat_ttl_days": (int, 30),
    "seat_overage_pct": (float, 0.0),
    "quota_overage_pct": (float, 0.0),
    "quota_warn_pct": (float, 80.0),
}
_TIER_FIELDS = {"features", "seats", "quotas", "description"}


class PolicyError(ValueError):
    """The policy file is invalid; the message says where."""


def policy_version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def _number(where: str, value: Any, kind: type, minimum: float = 0) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise PolicyError(f"{where}: must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    if value < minimum:
        raise PolicyError(f"{where}: must be >= {minimum}, got {value!r}")
    return kind(value)


def _features(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(f, str) and f for f in value):
        raise PolicyError(f"{where}: must be a list of feature names")
    for name in value:
        if "*" in name[:-1]:
            raise PolicyError(f"{where}: {name!r}: only a trailing '*' wildcard is allowed")
    return tuple(value)


def parse_quotas(where: str, value: Any) -> dict[str, Quota]:
    """Parse ``{feature_glob: {limit, period}}``; shared by tiers and license overrides."""
    if not isinstance(value, dict):
        raise PolicyError(f"{where}: must be a table of feature -> {{limit, period}}")
    quotas = {}
    for feature, spec in value.items():
        here = f"{where}.{feature}"
        if not isinstance(spec, dict) or set(spec) - {"limit", "period"} or "limit" not in spec:
            raise PolicyError(f"{here}: must be {{limit = N, period = \"day\"|\"month\"}}")
        period = spec.get("period", "month")
        if period not in Period.__members__.values():
            raise PolicyError(f"{here}.period: must be 'day' or 'month', got {period!r}")
        quotas[feature] = Quota(limit=_number(f"{here}.limit", spec["limit"], int), period=Period(period))
    return quotas


def _tier(where: str, name: str, table: Any) -> Tier:
    if not isinstance(table, dict):
        raise PolicyError(f"{where}: must be a table")
    unknown = set(table) - _TIER_FIELDS
    if unknown:
        raise PolicyError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    if "features" not in table:
        raise PolicyError(f"{where}.features: missing")
    seats = table.get("seats")
    return Tier(
        name=name,
        features=_features(f"{where}.features", table["features"]),
        seats=None if seats is None else _number(f"{where}.seats", seats, int, minimum=1),
        quotas=parse_quotas(f"{where}.quotas", table.get("quotas", {})),
    )


def parse_policy(data: bytes, source: str = "policy.toml") -> Policy:
    try:
        doc: Mapping[str, Any] = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from None
    unknown = set(doc) - set(_GLOBALS) - {"tiers"}
    if unknown:
        raise PolicyError(f"{source}: unknown setting(s) {', '.join(sorted(unknown))}")
    tiers = doc.get("tiers")
    if not isinstance(tiers, dict) or not tiers:
        raise PolicyError(f"{source}: [tiers]: at least one tier is required")
    settings = {
        key: _number(f"{source}: {key}", doc.get(key, default), kind)
        for key, (kind, default) in _GLOBALS.items()
    }
    return Policy(
        tiers={name: _tier(f"{source}: tier {name!r}", name, table) for name, table in tiers.items()},
        version=policy_version(data),
        **settings,
    )


def load_policy(path: Path) -> Policy:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read policy: {exc.strerror}") from None
    return parse_policy(data, str(path))
