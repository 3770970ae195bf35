"""``portcullis migrate`` and ``portcullis registry copy``: the PostgreSQL registry's schema and
the move of a single-host registry into it (SPEC §11)."""
from __future__ import annotations

import click

from gateway.cli.common import data_option, emit, json_option, settings_for
from gateway.cli.help import Group

url_option = click.option("--registry-url", "registry_url", metavar="URL", default=None,
                          help="postgresql://user@host:port/db (default: the registry_url setting).")


@click.command()
@url_option
@data_option
@json_option
def migrate(registry_url: str | None, data_dir: str | None, as_json: bool) -> None:
    """Create or upgrade the PostgreSQL registry's schema (idempotent; safe while other hosts
    run the previous version). The SQLite registry needs none: it is created on first use."""
    from gateway.registry.migrate import migrate as apply

    url = settings_for(data_dir, registry_url=registry_url).registry_url
    if not url:
        emit({"registry": "sqlite", "applied": []}, as_json,
             lambda _: "the registry is SQLite in the data directory: nothing to migrate")
        return
    result = {"registry": "postgresql", **apply(url)}
    emit(result, as_json, lambda r: (f"applied {', '.join(r['applied'])}; " if r["applied"] else "up to date; ")
         + f"schema version {r['version']}")


@click.group(cls=Group)
def registry() -> None:
    """The shared registry (licenses, seats, counters, nonces, generations)."""


@registry.command("copy")
@click.option("--from", "source", required=True, metavar="sqlite:PATH",
              help="The single-host registry file, e.g. sqlite:data/portcullis.db.")
@click.option("--to", "target", required=True, metavar="postgresql://…",
              help="The PostgreSQL registry (migrated first; licenses, seats and counters must be new there).")
@json_option
def copy(source: str, target: str, as_json: bool) -> None:
    """Move a single-host registry into PostgreSQL: licenses with their revisions and seal
    stamps, seats, usage counters, nonces still in force, generations and claims, and the callers
    of the data directory the file is in (their secrets sealed under keys/registry_seal.key)."""
    from gateway.registry.copy import CopyError, copy_registry

    if not source.startswith("sqlite:"):
        raise click.BadParameter("must be sqlite:PATH", param_hint="--from")
    if not target.startswith(("postgresql://", "postgres://")):
        raise click.BadParameter("must be a postgresql:// URL", param_hint="--to")
    try:
        result = copy_registry(source.removeprefix("sqlite:"), target)
    except CopyError as exc:
        raise click.ClickException(str(exc)) from None
    emit(result, as_json, lambda r: "copied " + ", ".join(f"{n} {name}" for name, n in r["copied"].items())
         + f"; revision {r['revision']}")
