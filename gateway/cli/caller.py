"""``portcullis caller``: callers of the port and their HMAC keys (secrets printed once)."""
from __future__ import annotations

from contextlib import closing

import click

from gateway.callers import Caller, open_callers
from gateway.cli.common import data_option, emit, json_option, publish, settings_for, table
from gateway.cli.help import Group

# What `caller add` gives a caller unless told otherwise. A service using PortClient asks once per
# license, feature and user per cache_ttl_s (30 s), so 100/s per worker is ~3,000 distinct
# questions per half minute, and one full batch (100 checks, each a token) per second; a caller
# stuck in a retry loop then takes a few percent of a worker instead of all of it.
DEFAULT_RATE_LIMIT_RPS = 100.0


def _secret_text(r: dict) -> str:
    return (f"caller {r['caller_id']}: key id {r['key_id']}\n"
            f"secret (shown once, store it now): {r['secret']}")


@click.group(cls=Group)
def caller() -> None:
    """Manage callers: who may ask the port, with which keys, about what."""


@caller.command("add")
@click.argument("name")
@click.option("--features", multiple=True, default=("*",), show_default=True, help="Feature globs it may ask about.")
@click.option("--products", multiple=True, default=("*",), show_default=True, help="Product globs.")
@click.option("--environments", multiple=True, default=("*",), show_default=True, help="Environment globs.")
@click.option("--mtls-identity", "identities", multiple=True, help="Certificate URI SAN or CN that maps to it.")
@click.option("--admin", "is_admin", is_flag=True, help="May use the admin endpoints.")
@click.option("--rate-limit-rps", "--rate-limit", "rate_limit", type=click.FloatRange(min=0), metavar="N",
              default=DEFAULT_RATE_LIMIT_RPS, show_default=True,
              help="Checks per second per worker, each check of a batch counting (0: unlimited).")
@click.option("--no-key", is_flag=True, help="mTLS only: create no HMAC key.")
@data_option
@json_option
def add(name, features, products, environments, identities, is_admin, rate_limit, no_key, data_dir, as_json):
    """Add caller NAME; prints its key id and secret once."""
    settings = settings_for(data_dir)
    new = Caller(caller_id=name, mtls_identities=tuple(identities), products=tuple(products),
                 features=tuple(features), environments=tuple(environments), admin=is_admin,
                 rate_limit_rps=rate_limit)
    with closing(open_callers(settings)) as callers:
        key = callers.add(new, with_key=not no_key)
    publish(settings)
    result = {"caller_id": name, "key_id": key[0] if key else None, "secret": key[1] if key else None}
    emit(result, as_json, lambda r: _secret_text(r) if key else f"caller {name} added (mTLS only)")


@caller.command("list")
@data_option
@json_option
def list_(data_dir, as_json):
    """List callers with their scopes and key ids (never secrets)."""
    settings = settings_for(data_dir)
    with closing(open_callers(settings)) as callers:
        found = callers.load().callers
    rows = [c.to_toml() | {"caller_id": c.caller_id} for c in found.values()]
    emit({"callers": rows}, as_json, lambda r: table(r["callers"], ["caller_id", "key_ids", "mtls_identities",
                                                                    "products", "features", "admin",
                                                                    "rate_limit_rps"]))


@caller.command("rotate")
@click.argument("name")
@data_option
@json_option
def rotate(name, data_dir, as_json):
    """Give NAME a new key; its old keys stay valid until `caller drop-key`."""
    settings = settings_for(data_dir)
    with closing(open_callers(settings)) as callers:
        key_id, secret = callers.rotate(name)
    publish(settings)
    emit({"caller_id": name, "key_id": key_id, "secret": secret}, as_json, _secret_text)


@caller.command("drop-key")
@click.argument("name")
@click.argument("key_id")
@data_option
def drop(name, key_id, data_dir):
    """Retire one of NAME's keys (after rotation)."""
    settings = settings_for(data_dir)
    with closing(open_callers(settings)) as callers:
        callers.drop_key(name, key_id)
    publish(settings)
    click.echo(f"key {key_id} of caller {name} removed")


@caller.command("limit")
@click.argument("name")
@click.argument("rate_limit", metavar="N", type=click.FloatRange(min=0))
@data_option
def limit(name, rate_limit, data_dir):
    """Set NAME's rate limit to N checks per second per worker, each check of a batch counting (0: unlimited)."""
    settings = settings_for(data_dir)
    with closing(open_callers(settings)) as callers:
        callers.limit(name, rate_limit)
    publish(settings)
    click.echo(f"caller {name}: " + (f"{rate_limit:g} requests/s per worker" if rate_limit else "no rate limit"))


@caller.command("remove")
@click.argument("name")
@data_option
def remove(name, data_dir):
    """Remove caller NAME and all its keys."""
    settings = settings_for(data_dir)
    with closing(open_callers(settings)) as callers:
        callers.remove(name)
    publish(settings)
    click.echo(f"caller {name} removed")
