"""``portcullis certs``: a throwaway private PKI to try mTLS (see the README's mTLS walkthrough)."""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from gateway.certs import write_pki
from gateway.cli.common import emit, json_option
from gateway.cli.help import Group


@click.group(cls=Group)
def certs() -> None:
    """Certificates for trying mTLS locally; production brings its own CA."""


def _summary(result: dict) -> str:
    ca, server = result["ca"], result["server"]
    lines = [f"CA      {ca['cert']}  (key {ca['key']})",
             f"server  {server['cert']}  (key {server['key']}, name {server['name']})"]
    lines += [f"client  {c['cert']}  (key {c['key']}, identity {c['identity']})" for c in result["clients"]]
    lines.append(f"\nportcullis serve --tls-cert {server['cert']} --tls-key {server['key']} --client-ca {ca['cert']}")
    return "\n".join(lines)


@certs.command("make")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Directory to create (must be absent or empty; made private, it holds the CA key).")
@click.option("--ca-name", default="Portcullis Local CA", show_default=True, help="Subject CN of the CA.")
@click.option("--server-name", default="localhost", show_default=True,
              help="DNS name or IP the server certificate is for (localhost also covers 127.0.0.1 and ::1).")
@click.option("--client", "clients", multiple=True, metavar="ID",
              help="Client identity, repeatable: a URI such as spiffe://corp/billing (URI SAN) or a plain name (CN).")
@json_option
def make(out: str, ca_name: str, server_name: str, clients: tuple[str, ...], as_json: bool) -> None:
    """Create a CA, a server certificate and one client certificate per --client in OUT."""
    try:
        result = write_pki(Path(out), ca_name=ca_name, server_name=server_name, clients=clients,
                           now=datetime.now(UTC))
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    emit(result, as_json, _summary)
