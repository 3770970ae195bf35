"""Callers: who may ask the port, with which keys, about what (``callers.toml`` + secret store).

``callers.toml`` holds scopes and key ids only; the secrets live in ``keys/hmac_secrets.json``
(mode 0600). A caller may hold several key ids at once so keys can be rotated without downtime.
A running gateway reads them through a :class:`CallerSource`, which also tells it when they
changed: removing a caller or dropping a key takes effect without a restart (SPEC §3). With
``registry_url`` naming PostgreSQL the callers live there instead, shared by every host, their
secrets sealed (:mod:`gateway.registry.postgres_callers`); :func:`open_callers` picks the one.
"""
from __future__ import annotations

import hashlib
import json
import secrets
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Hashable, Protocol

import tomli_w

from gateway.engine import any_match
from gateway.keyfiles import write_private

if TYPE_CHECKING:
    from gateway.config import Settings

_SCOPE_FIELDS = ("products", "features", "environments")
_FIELDS = {"key_ids", "mtls_identities", *_SCOPE_FIELDS, "admin", "rate_limit_rps"}


class CallersError(ValueError):
    """callers.toml or the secret store is invalid, or an edit is impossible."""


@dataclass(frozen=True, slots=True)
class Caller:
    caller_id: str
    key_ids: tuple[str, ...] = ()
    mtls_identities: tuple[str, ...] = ()
    products: tuple[str, ...] = ("*",)
    features: tuple[str, ...] = ("*",)
    environments: tuple[str, ...] = ("*",)
    admin: bool = False
    rate_limit_rps: float = 0.0  # 0: unlimited

    def refusal(self, products: tuple[str, ...], feature: str | None = None,
                environment: str | None = None) -> str | None:
        """Why this caller may not ask about each of ``products`` (and ``feature`` in
        ``environment``, when given), else None (→ 403 CALLER_NOT_AUTHORIZED).

        Callers pass the license's own product, never only one a request names (SPEC §3). The
        answer names no product: the caller must not learn which product a license is for.
        """
        if feature is not None and not any_match(self.features, feature):
            return f"caller may not ask about feature {feature!r}"
        if not all(any_match(self.products, product) for product in products):
            return "caller may not ask about this product"
        if environment is not None and not any_match(self.environments, environment):
            return f"caller may not ask about environment {environment!r}"
        return None

    def to_toml(self) -> dict[str, Any]:
        return {"key_ids": list(self.key_ids), "mtls_identities": list(self.mtls_identities),
                "products": list(self.products), "features": list(self.features),
                "environments": list(self.environments), "admin": self.admin,
                "rate_limit_rps": self.rate_limit_rps}


@dataclass(frozen=True)
class CallerDirectory:
    """Lookup tables for authentication: key id → (caller, secret), mTLS identity → caller."""

    callers: dict[str, Caller]
    secrets: dict[str, bytes] = field(repr=False)
    by_key_id: dict[str, Caller] = field(init=False)
    by_identity: dict[str, Caller] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_key_id", {k: c for c in self.callers.values() for k in c.key_ids})
        object.__setattr__(self, "by_identity", {i: c for c in self.callers.values() for i in c.mtls_identities})


def _secrets_path(keys_dir: Path) -> Path:
    return keys_dir / "hmac_secrets.json"


def _read_callers(path: Path) -> dict[str, Caller]:
    if not path.exists():
        return {}
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CallersError(f"{path}: cannot be read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CallersError(f"{path}: not valid TOML: {exc}") from None
    tables = doc.get("callers") or {}
    if not isinstance(tables, dict) or not all(isinstance(table, dict) for table in tables.values()):
        raise CallersError(f"{path}: [callers.NAME] tables expected")
    return {name: caller_from_table(str(path), name, table) for name, table in tables.items()}


def caller_from_table(where: str, name: str, table: dict[str, Any]) -> Caller:
    """A caller from its table (``Caller.to_toml()``'s shape), as ``callers.toml`` or a registry
    holds it; CallersError naming ``where`` and the caller when it is not a valid one."""
    unknown = set(table) - _FIELDS
    if unknown:
        raise CallersError(f"{where}: caller {name!r}: unknown field(s) {', '.join(sorted(unknown))}")
    try:
        return Caller(
            caller_id=name,
            **{k: tuple(_str_list(where, name, k, table[k])) for k in ("key_ids", "mtls_identities", *_SCOPE_FIELDS)
               if k in table},
            admin=bool(table.get("admin", False)),
            rate_limit_rps=float(table.get("rate_limit_rps", 0.0)),
        )
    except (TypeError, ValueError) as exc:
        raise CallersError(f"{where}: caller {name!r}: {exc}") from None


def _str_list(where: str, name: str, key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CallersError(f"{where}: caller {name!r}: {key} must be a list of strings")
    return value


def _read_secrets(keys_dir: Path) -> dict[str, bytes]:
    path = _secrets_path(keys_dir)
    if not path.exists():
        return {}
    try:
        return {k: v.encode("utf-8") for k, v in json.loads(path.read_text()).items()}
    except OSError as exc:
        raise CallersError(f"{path}: cannot be read: {exc.strerror}") from None
    except (ValueError, AttributeError):
        raise CallersError(f"{path}: secret store is corrupt") from None


def load_directory(callers_path: Path, keys_dir: Path) -> CallerDirectory:
    return CallerDirectory(_read_callers(callers_path), _read_secrets(keys_dir))


class CallerSource(Protocol):
    """Where a running gateway reads its callers, and how it notices that they changed.

    Every worker polls :meth:`version` twice a second and loads again when it moves, so it must
    be cheap, and must change whenever :meth:`load` would return something else. The files here
    answer with a digest of their bytes; a shared store (SPEC §11) answers with a revision it
    bumps on every change.
    """

    def version(self) -> Hashable: ...

    def load(self) -> CallerDirectory:
        """The callers now; CallersError if they cannot be read (the caller keeps the old ones)."""

    def close(self) -> None: ...


class CallerStore(CallerSource, Protocol):
    """Callers as ``portcullis caller`` edits them: every edit is whole or not at all, and moves
    :meth:`version`. Those that make a key return ``(key_id, secret)``, to be shown once."""

    def add(self, caller: Caller, with_key: bool = True) -> tuple[str, str] | None: ...

    def rotate(self, name: str) -> tuple[str, str]: ...

    def drop_key(self, name: str, key_id: str) -> None: ...

    def limit(self, name: str, rate_limit_rps: float) -> None: ...

    def remove(self, name: str) -> None: ...


def open_callers(settings: Settings) -> CallerStore:
    """Where this deployment's callers live: the PostgreSQL registry when ``registry_url`` names
    one (every host shares them), else ``callers.toml`` and ``keys/hmac_secrets.json``."""
    if settings.registry_url:
        from gateway.registry.postgres_callers import PostgresCallers
        return PostgresCallers(settings.registry_url, settings.keys_dir)
    return CallerFiles(settings.callers_path, settings.keys_dir)


class CallerFiles:
    """``callers.toml`` and the secret store, as edited by ``portcullis caller`` or by hand."""

    def __init__(self, callers_path: Path, keys_dir: Path) -> None:
        self.callers_path, self.keys_dir = callers_path, keys_dir

    def add(self, caller: Caller, with_key: bool = True) -> tuple[str, str] | None:
        return add_caller(self.callers_path, self.keys_dir, caller, with_key)

    def rotate(self, name: str) -> tuple[str, str]:
        return rotate_caller(self.callers_path, self.keys_dir, name)

    def drop_key(self, name: str, key_id: str) -> None:
        drop_key(self.callers_path, self.keys_dir, name, key_id)

    def limit(self, name: str, rate_limit_rps: float) -> None:
        limit_caller(self.callers_path, self.keys_dir, name, rate_limit_rps)

    def remove(self, name: str) -> None:
        remove_caller(self.callers_path, self.keys_dir, name)

    def version(self) -> bytes:
        """SHA-256 of both files' bytes (a few kilobytes): unlike mtime and size, it cannot miss a
        change made within one clock tick or one that keeps the length."""
        digest = hashlib.sha256()
        for path in (self.callers_path, _secrets_path(self.keys_dir)):
            try:
                digest.update(hashlib.sha256(path.read_bytes()).digest())
            except FileNotFoundError:
                digest.update(b"absent")
            except OSError as exc:  # a version all the same: load() says why, once, not every poll
                digest.update(f"unreadable {exc.errno}".encode())
        return digest.digest()

    def load(self) -> CallerDirectory:
        return load_directory(self.callers_path, self.keys_dir)

    def close(self) -> None:
        """Nothing is held open between calls."""


def _save(callers_path: Path, keys_dir: Path, callers: dict[str, Caller], store: dict[str, bytes]) -> None:
    # Secrets first: a key id listed in callers.toml without its secret would lock a caller out.
    write_private(_secrets_path(keys_dir), json.dumps({k: v.decode() for k, v in store.items()}).encode())
    body = tomli_w.dumps({"callers": {name: c.to_toml() for name, c in sorted(callers.items())}})
    tmp = callers_path.with_name(callers_path.name + ".tmp")
    tmp.write_text("# Callers of the port; secrets live in keys/hmac_secrets.json (0600).\n" + body)
    tmp.replace(callers_path)


def new_key() -> tuple[str, bytes]:
    """A new (key id, secret) pair for a caller."""
    return "pk_" + secrets.token_hex(8), ("ps_" + secrets.token_urlsafe(32)).encode()


def add_caller(callers_path: Path, keys_dir: Path, caller: Caller, with_key: bool = True) -> tuple[str, str] | None:
    """Add a caller; returns (key_id, secret) to show once, or None for an mTLS-only caller."""
    callers, store = _read_callers(callers_path), _read_secrets(keys_dir)
    if caller.caller_id in callers:
        raise CallersError(f"caller {caller.caller_id!r} already exists")
    new = None
    if with_key:
        key_id, secret = new_key()
        store[key_id] = secret
        caller = replace(caller, key_ids=caller.key_ids + (key_id,))
        new = (key_id, secret.decode())
    callers[caller.caller_id] = caller
    _save(callers_path, keys_dir, callers, store)
    return new


def rotate_caller(callers_path: Path, keys_dir: Path, name: str) -> tuple[str, str]:
    """Give a caller a new key; the old ones stay valid until removed with ``drop_key``."""
    callers, store = _read_callers(callers_path), _read_secrets(keys_dir)
    if name not in callers:
        raise CallersError(f"no caller named {name!r}")
    key_id, secret = new_key()
    store[key_id] = secret
    callers[name] = replace(callers[name], key_ids=callers[name].key_ids + (key_id,))
    _save(callers_path, keys_dir, callers, store)
    return key_id, secret.decode()


def drop_key(callers_path: Path, keys_dir: Path, name: str, key_id: str) -> None:
    callers, store = _read_callers(callers_path), _read_secrets(keys_dir)
    if name not in callers or key_id not in callers[name].key_ids:
        raise CallersError(f"caller {name!r} has no key {key_id!r}")
    store.pop(key_id, None)
    callers[name] = replace(callers[name], key_ids=tuple(k for k in callers[name].key_ids if k != key_id))
    _save(callers_path, keys_dir, callers, store)


def limit_caller(callers_path: Path, keys_dir: Path, name: str, rate_limit_rps: float) -> None:
    """Set a caller's rate limit, in checks per second, a batch counting each of its checks (0: unlimited)."""
    callers, store = _read_callers(callers_path), _read_secrets(keys_dir)
    if name not in callers:
        raise CallersError(f"no caller named {name!r}")
    callers[name] = replace(callers[name], rate_limit_rps=rate_limit_rps)
    _save(callers_path, keys_dir, callers, store)


def remove_caller(callers_path: Path, keys_dir: Path, name: str) -> None:
    callers, store = _read_callers(callers_path), _read_secrets(keys_dir)
    if name not in callers:
        raise CallersError(f"no caller named {name!r}")
    for key_id in callers.pop(name).key_ids:
        store.pop(key_id, None)
    _save(callers_path, keys_dir, callers, store)
