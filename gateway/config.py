"""Settings: one frozen object built from defaults, ``portcullis.toml``, ``PORTCULLIS_*`` and flags.

Precedence (last wins): defaults < ``<data>/portcullis.toml`` < environment < explicit overrides.
In the TOML file a setting ``audit_ack`` may be written flat or as ``[audit] ack = ...``; in the
environment it is ``PORTCULLIS_AUDIT_ACK``. Every field is documented in ``docs/settings.md``
(a test keeps that true).
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import tomllib
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping


class SettingsError(ValueError):
    """A setting has an invalid value; the message names the setting and the source."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    environment: str = "dev"
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    instance: str = ""  # default: the host name; each worker appends "-w<N>" so every writer is unique
    max_body_bytes: int = 64 * 1024
    read_timeout_s: float = 10.0
    clock_skew_s: int = 300
    cache_ttl_s: int = 30
    auth_fail_rps: float = 20.0
    # Proxies whose forwarding header names the client (gateway.http.client_addr): addresses or
    # networks; empty, every header is ignored and the client is the TCP peer.
    trusted_proxies: tuple[str, ...] = ()
    trusted_proxies_header: str = "x-forwarded-for"
    audit_ack: str = "durable"
    audit_on_failure: str = "deny"
    audit_rotate_s: float = 5.0  # a decision is queryable within seconds (docs/audit.md: rotation)
    audit_rotate_bytes: int = 64 * 1024 * 1024
    audit_commit_interval_ms: float = 0.0
    audit_compact_s: float = 600.0  # worker 0 merges closed hours this often; 0: never (cron instead)
    audit_retention_days: int = 0  # whole UTC days older than this are pruned (docs/audit.md); 0: keep all
    audit_directory: str = "audit"  # relative to the data directory, or absolute (shared by several hosts)
    log_level: str = "info"
    access_log: bool = False
    shutdown_timeout_s: float = 30.0
    event_loop: str = "uvloop"  # each worker's loop; asyncio's own where uvloop is not installed
    tls_cert: str = ""
    tls_key: str = ""
    client_ca: str = ""
    allow_plaintext: bool = False  # serve without TLS on an address other than loopback (SPEC §3)
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8501
    # Who may see the dashboard (docs/dashboard.md, "Sign-in"): "oidc" (st.login), "proxy" (a
    # trusted authenticating proxy's header) or "none" (loopback only, unless opted out).
    dashboard_auth: str = "none"
    dashboard_allow_unauthenticated: bool = False
    dashboard_allowed_hosts: str = ""
    dashboard_oidc_metadata_url: str = ""
    dashboard_oidc_client_id: str = ""
    dashboard_oidc_client_secret_file: str = "keys/dashboard-oidc.secret"
    dashboard_oidc_redirect_uri: str = ""
    dashboard_cookie_secret_file: str = "keys/dashboard-cookie.secret"
    dashboard_proxy_user_header: str = "X-Forwarded-User"
    dashboard_proxy_addresses: str = "127.0.0.1,::1"
    dashboard_sql_timeout_s: float = 30.0
    dashboard_sql_memory_mb: int = 512
    dashboard_sql_temp_mb: int = 1024
    data_group_read: bool = False  # 0750/0640 instead of 0700/0600 (gateway.filemodes)
    # The shared registry (SPEC §11): "" keeps it in SQLite in the data directory (one host);
    # postgresql://user@host:port/db shares it between several hosts.
    registry_url: str = ""
    registry_on_unavailable: str = "deny"  # PostgreSQL unreachable: "deny" (503) or "cached" (SPEC §11)
    webhooks_url: str = ""
    webhooks_secret_file: str = "keys/webhook.secret"
    webhooks_attempts: int = 6
    webhooks_backoff_s: float = 1.0
    webhooks_breach_threshold: int = 20
    extra: Mapping[str, Any] = field(default_factory=dict)

    # Derived paths: one place that knows the data layout (SPEC §8).
    @property
    def policy_path(self) -> Path:
        return self.data_dir / "policy.toml"

    @property
    def callers_path(self) -> Path:
        return self.data_dir / "callers.toml"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "portcullis.db"

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def audit_dir(self) -> Path:
        return self.data_dir / self.audit_directory

    @property
    def hour_closed_after(self) -> timedelta:
        """How long after its end an hour of the audit trail counts as closed, so that compaction
        and rollups may take it: twice the rotation interval (the writers' last segments of the
        hour converted) plus five minutes."""
        return timedelta(seconds=2 * self.audit_rotate_s + 300)

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def nonce_journal_dir(self) -> Path:
        """A single worker's nonces, kept across restarts (:mod:`gateway.nonce_journal`)."""
        return self.data_dir / "nonces"

    @property
    def run_dir(self) -> Path:
        """Per-run scratch state shared by the workers of one ``serve`` (emptied at start)."""
        return self.data_dir / "run"

    @property
    def dashboard_oidc_client_secret_path(self) -> Path:
        return self.data_dir / self.dashboard_oidc_client_secret_file

    @property
    def dashboard_cookie_secret_path(self) -> Path:
        """Signs the dashboard's sign-in cookies; created (0600) on first use."""
        return self.data_dir / self.dashboard_cookie_secret_file

    @property
    def webhooks_secret_path(self) -> Path:
        return self.data_dir / self.webhooks_secret_file

    @property
    def host_name(self) -> str:
        """This host's name in a shared audit directory: its manifest chain's name, and the
        prefix of every worker's instance id."""
        return self.instance or socket.gethostname()

    def instance_id(self, worker: int = 0) -> str:
        return f"{self.host_name}-w{worker}"

    def with_(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


_CHOICES = {
    "audit_ack": ("durable", "buffered"),
    "audit_on_failure": ("deny", "allow"),
    "log_level": ("debug", "info", "warning", "error"),
    "dashboard_auth": ("none", "oidc", "proxy"),
    "trusted_proxies_header": ("x-forwarded-for", "forwarded"),
    "registry_on_unavailable": ("deny", "cached"),
    "event_loop": ("uvloop", "asyncio"),
}
_FIELDS = {f.name: f for f in fields(Settings) if f.name != "extra"}


def _coerce(name: str, raw: Any, source: str) -> Any:
    kind = type(Settings.__dataclass_fields__[name].default)
    try:
        if kind is bool:
            value = raw if isinstance(raw, bool) else str(raw).strip().lower() in ("1", "true", "yes", "on")
        elif kind is int and not isinstance(raw, bool):
            value = int(raw)
        elif kind is float and not isinstance(raw, bool):
            value = float(raw)
        elif issubclass(kind, Path):
            value = Path(raw)
        elif kind is tuple:  # a TOML list, or comma-separated in the environment
            value = tuple(str(item).strip() for item in (raw.split(",") if isinstance(raw, str) else raw))
            value = tuple(item for item in value if item)
        else:
            value = str(raw)
    except (TypeError, ValueError):
        raise SettingsError(f"{source}: setting {name!r} must be {kind.__name__}, got {raw!r}") from None
    if name == "trusted_proxies":
        _check_networks(name, value, source)
    if name in _CHOICES and value not in _CHOICES[name]:
        raise SettingsError(f"{source}: setting {name!r} must be one of {', '.join(_CHOICES[name])}, got {value!r}")
    return value


def _check_networks(name: str, value: tuple[str, ...], source: str) -> None:
    for item in value:
        try:
            ipaddress.ip_network(item)
        except ValueError as exc:
            raise SettingsError(f"{source}: setting {name!r}: {exc}") from None


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name not in _FIELDS:
            flat.update(_flatten(value, f"{name}_"))
        else:
            flat[name] = value
    return flat


def load_settings(data_dir: str | Path | None = None, env: Mapping[str, str] | None = None,
                  **overrides: Any) -> Settings:
    """Build the settings for a data directory (``--data`` > ``PORTCULLIS_DATA`` > ``./data``)."""
    env = os.environ if env is None else env
    root = Path(data_dir or env.get("PORTCULLIS_DATA") or "data")
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    toml_path = root / "portcullis.toml"
    if toml_path.exists():
        try:
            table = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{toml_path}: invalid TOML: {exc}") from None
        for name, raw in _flatten(table).items():
            if name in _FIELDS:
                values[name] = _coerce(name, raw, str(toml_path))
            else:
                extra[name] = raw
    for name in _FIELDS:
        key = f"PORTCULLIS_{'ENV' if name == 'environment' else name.upper()}"
        if key in env and name != "data_dir":
            values[name] = _coerce(name, env[key], f"environment variable {key}")
    for name, raw in overrides.items():
        if raw is not None:
            if name not in _FIELDS:
                raise SettingsError(f"unknown setting {name!r}")
            values[name] = _coerce(name, raw, f"option {name}")
    values["data_dir"] = root
    return Settings(extra=extra, **values)
