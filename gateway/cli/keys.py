"""``portcullis keys``: this gateway's public keys, and trusting another issuer."""
from __future__ import annotations

import click

from gateway import admin
from gateway.cli.common import data_option, emit, json_option, settings_for
from gateway.cli.help import Group
from gateway.cli.setup import public_keys


@click.group(cls=Group)
def keys() -> None:
    """This gateway's public keys (recipient, issuer, audit) and trusted issuers."""


@keys.command("show")
@data_option
@json_option
def show(data_dir: str | None, as_json: bool) -> None:
    """Print the public keys; the private halves never leave data/keys/."""
    result = public_keys(settings_for(data_dir))
    emit(result, as_json, lambda r: "\n".join(
        f"{kind:9} {r[kind]}  (key id {r[kind + '_key_id']})" for kind in ("recipient", "issuer", "audit")))


@keys.command("trust")
@click.argument("public_key")
@data_option
@json_option
def trust(public_key: str, data_dir: str | None, as_json: bool) -> None:
    """Accept license bundles signed by another issuer (PUBLIC_KEY as `ed25519:...`)."""
    kid = admin.trust_issuer(settings_for(data_dir), public_key)
    emit({"trusted_issuer_key_id": kid}, as_json, lambda r: f"trusted issuer {kid}")
