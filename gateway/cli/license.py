"""``portcullis license``: issue, import, list, show and change the status of licenses."""
from __future__ import annotations

from pathlib import Path

import click

from gateway import admin
from gateway.cli.common import data_option, emit, json_option, registry, settings_for, table
from gateway.cli.help import Group
from gateway.licenses import license_to_dict, parse_time
from gateway.policy import load_policy
from gateway.types import Status


def _public(lic) -> dict:
    doc = license_to_dict(lic)
    doc.pop("key_hash")
    return doc


def _time(value: str | None, name: str):
    try:
        return parse_time(value, name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=f"--{name}") from None


@click.group("license", cls=Group)
def license_() -> None:
    """Manage licenses in this gateway's registry."""


@license_.command("issue")
@click.option("--customer", required=True)
@click.option("--tier", required=True, help="A tier of policy.toml.")
@click.option("--product", default="default", show_default=True)
@click.option("--expires", help="Expiry date or datetime (UTC); omit for perpetual.")
@click.option("--starts", help="Start date or datetime (UTC); default now.")
@click.option("--seats", type=int, help="Override the tier's seat limit.")
@click.option("--feature", "features", multiple=True, help="Extra feature beyond the tier (repeatable).")
@click.option("--env", "environments", multiple=True, help="Environment where it is valid (repeatable; default any).")
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the license as a sealed bundle.")
@click.option("--recipient", help="Seal to another gateway's recipient key (x25519:...) instead of this one.")
@data_option
@json_option
def issue(customer, tier, product, expires, starts, seats, features, environments, out, recipient, data_dir, as_json):
    """Issue a license: prints its id and key once and imports it into this registry."""
    settings = settings_for(data_dir)
    if recipient and not out:
        raise click.UsageError("--recipient needs --out")
    policy = load_policy(settings.policy_path)
    with registry(settings, publish=True) as store:
        issued = admin.issue(store, policy, customer=customer, tier=tier, product=product,
                             expires_at=_time(expires, "expires"), starts_at=_time(starts, "starts"), seats=seats,
                             features=features, environments=environments or ("*",))
        sealed = admin.seal_license(settings, store, issued.license.license_id, recipient) if out else None
    if out:
        Path(out).write_text(sealed)
    result = {"license_id": issued.license.license_id, "key": issued.key, "bundle": out,
              "license": _public(issued.license)}
    emit(result, as_json, lambda r: (f"license {r['license_id']} issued to {customer} ({tier})\n"
                                     f"key (shown once, give it to the customer): {r['key']}"
                                     + (f"\nsealed bundle written to {out}" if out else "")))


@license_.command("seal")
@click.argument("license_id")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to write the sealed bundle.")
@click.option("--recipient", help="Seal to another gateway's recipient key (x25519:...) instead of this one.")
@data_option
@json_option
def seal(license_id, out, recipient, data_dir, as_json):
    """Write a license as it is now as a sealed bundle, to send a change (a revocation, a renewal)
    to the gateways that hold it. Gateways apply a license's bundles in the order they were
    sealed and refuse older ones."""
    settings = settings_for(data_dir)
    with registry(settings) as store:
        Path(out).write_text(admin.seal_license(settings, store, license_id, recipient))
    emit({"license_id": license_id, "out": str(out)}, as_json,
         lambda r: f"sealed bundle of license {license_id} written to {out}")


@license_.command("import")
@click.argument("bundle_file", type=click.Path(exists=True, dir_okay=False))
@data_option
@json_option
def import_(bundle_file, data_dir, as_json):
    """Import a sealed license bundle (verified once; importing it again changes nothing)."""
    settings = settings_for(data_dir)
    with registry(settings, publish=True) as store:
        lic, changed = admin.import_bundle(settings, store, Path(bundle_file).read_text(errors="replace"))
    emit({"license_id": lic.license_id, "changed": changed}, as_json,
         lambda r: f"license {r['license_id']} {'imported' if changed else 'already up to date'}")


@license_.command("list")
@click.option("--status", type=click.Choice([s.value for s in Status]))
@data_option
@json_option
def list_(status, data_dir, as_json):
    """List licenses (never keys)."""
    settings = settings_for(data_dir)
    with registry(settings) as store:
        _, licenses = store.licenses_since(0)
    rows = [_public(lic) for lic in licenses if status is None or lic.status.value == status]
    emit({"licenses": rows}, as_json, lambda r: table(
        r["licenses"], ["license_id", "customer", "product", "tier", "status", "expires_at", "seats"]))


@license_.command("show")
@click.argument("license_id")
@data_option
@json_option
def show(license_id, data_dir, as_json):
    """Show one license."""
    settings = settings_for(data_dir)
    with registry(settings) as store:
        lic = store.get(license_id)
    if lic is None:
        raise click.ClickException(f"no license {license_id!r}")
    emit(_public(lic), as_json, lambda r: "\n".join(f"{k:13} {v}" for k, v in r.items()))


def _status_command(name: str, status: Status, help_text: str) -> click.Command:
    @click.command(name, help=help_text)
    @click.argument("license_id")
    @data_option
    @json_option
    def command(license_id, data_dir, as_json):
        settings = settings_for(data_dir)
        with registry(settings, publish=True) as store:
            lic = admin.set_status(store, license_id, status)
        emit(_public(lic), as_json, lambda r: f"license {license_id} is now {status.value}")
    return command


license_.add_command(_status_command("revoke", Status.REVOKED, "Revoke a license for good (denied from now on)."))
license_.add_command(_status_command("suspend", Status.SUSPENDED, "Suspend a license (resume undoes it)."))
license_.add_command(_status_command("resume", Status.ACTIVE, "Make a suspended license active again."))
