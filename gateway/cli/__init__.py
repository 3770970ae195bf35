"""The ``portcullis`` command: a click group whose subcommands live in one module each.

Subcommands load lazily so that ``portcullis call`` does not pay for importing DuckDB or
Streamlit. To add one, write ``gateway/cli/<name>.py`` exposing a click command or group and add
it to ``_COMMANDS``.
"""
from __future__ import annotations

import importlib

import click

from gateway.cli.help import Group

# command name -> "module:attribute"
_COMMANDS = {
    "init": "gateway.cli.setup:init",
    "caller": "gateway.cli.caller:caller",
    "license": "gateway.cli.license:license_",
    "serve": "gateway.cli.serve:serve",
    "call": "gateway.cli.call:call",
    "keys": "gateway.cli.keys:keys",
    "dashboard": "gateway.cli.dashboard:dashboard",
    "demo": "gateway.cli.demo:demo",
    "certs": "gateway.cli.certs:certs",
    "audit": "gateway.cli.audit:audit",
    "backup": "gateway.cli.backup:backup",
    "restore": "gateway.cli.backup:restore",
    "policy": "gateway.cli.policy:policy",
    "report": "analytics.cli:report",
    "rollup": "analytics.cli:rollup",
    "sql": "analytics.cli:sql",
    "migrate": "gateway.cli.registry:migrate",
    "registry": "gateway.cli.registry:registry",
}


class _LazyGroup(Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def invoke(self, ctx: click.Context):
        """Known user errors become one-line messages with exit 1, never a traceback."""
        from gateway.admin import AdminError
        from gateway.callers import CallersError
        from gateway.config import SettingsError
        from gateway.policy import PolicyError
        from gateway.registry import LicenseConflict, RegistryUnavailable
        from gateway.tls import TLSConfigError
        try:
            return super().invoke(ctx)
        except (AdminError, CallersError, LicenseConflict, PolicyError, RegistryUnavailable, SettingsError,
                TLSConfigError) as exc:
            raise click.ClickException(str(exc)) from None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = _COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="portcullis")
def main() -> None:
    """Portcullis: the licensing enforcement gateway.

    Data directory: --data on commands that take it, else $PORTCULLIS_DATA, else ./data.
    """
