"""``portcullis init``: a data directory with keys, default policy and callers, and a registry."""
from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources

import click

from analytics.db import VIEW_DIRS
from gateway import admin, bundle, keyfiles
from gateway.certs import write_pki
from gateway.cli.common import data_option, emit, json_option, settings_for
from gateway.config import Settings
from gateway.registry import open_store, seal


def initialise(settings: Settings, server_name: str | None = None) -> dict:
    """Create whatever is missing; never overwrites a policy, callers file or key. Idempotent.

    With ``server_name``, also a private CA and a server certificate for that name in ``tls/``
    (once: an existing ``tls/`` is kept), so a gateway can serve TLS from its first start.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    created = []
    for name in ("policy.toml", "callers.toml"):
        target = settings.data_dir / name
        if not target.exists():
            target.write_bytes(resources.files("gateway.defaults").joinpath(name).read_bytes())
            created.append(str(target))
    # A dashboard may mount just what it reads (compose.yaml), so those folders exist from the start.
    for folder in (settings.audit_dir, *(settings.data_dir / name for name in VIEW_DIRS)):
        folder.mkdir(parents=True, exist_ok=True)
    keyfiles.fingerprint_secret(settings.keys_dir)
    tls = settings.data_dir / "tls"
    if server_name and not tls.exists():
        pki = write_pki(tls, ca_name="Portcullis Local CA", server_name=server_name, clients=(), now=datetime.now(UTC))
        created += [pki["ca"]["cert"], pki["server"]["cert"], pki["server"]["key"]]
    keyfiles.audit_key(settings.keys_dir)
    seal.create_key(settings.keys_dir)  # callers' secrets in a shared registry (gateway.registry.seal)
    registry = {"registry": "sqlite"}
    if settings.registry_url:  # the shared registry: its schema, created or brought up to date
        from gateway.registry.migrate import migrate
        registry = {"registry": "postgresql", "schema_version": migrate(settings.registry_url)["version"]}
    store = open_store(settings)
    try:
        admin.publish_snapshots(settings, store)
    finally:
        store.close()
    return {"data_dir": str(settings.data_dir), "created": created, **registry, **public_keys(settings)}


def public_keys(settings: Settings) -> dict:
    issuer = keyfiles.issuer_key(settings.keys_dir).public_key()
    recipient = keyfiles.recipient_key(settings.keys_dir).public_key()
    audit = keyfiles.audit_key(settings.keys_dir).public_key()
    return {"issuer": bundle.public_key_text(issuer), "issuer_key_id": bundle.key_id(issuer),
            "recipient": bundle.public_key_text(recipient), "recipient_key_id": bundle.key_id(recipient),
            "audit": bundle.public_key_text(audit), "audit_key_id": bundle.key_id(audit)}


@click.command()
@click.option("--server-cert", "server_name", metavar="NAME",
              help="Also create tls/ with a private CA and a server certificate for NAME (kept if tls/ exists).")
@click.option("--registry-url", "registry_url", metavar="URL", default=None,
              help="Share the registry in PostgreSQL (postgresql://user@host:port/db): create or migrate its schema. "
                   "Every later command needs the same registry_url (PORTCULLIS_REGISTRY_URL or portcullis.toml).")
@data_option
@json_option
def init(server_name: str | None, registry_url: str | None, data_dir: str | None, as_json: bool) -> None:
    """Create a data directory: keys, default policy and callers, registry."""
    try:
        result = initialise(settings_for(data_dir, registry_url=registry_url), server_name)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    emit(result, as_json, lambda r: "\n".join(
        [f"data directory ready: {r['data_dir']}"] + [f"  created {p}" for p in r["created"]]
        + [f"  recipient key (give to license issuers): {r['recipient']}"]))
