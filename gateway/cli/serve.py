"""``portcullis serve``: run the gateway on this data directory."""
from __future__ import annotations

import logging
import sys

import click

from gateway.cli.common import data_option, settings_for


@click.command()
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8080).")
@click.option("--workers", type=int, default=None, help="Worker processes sharing the port (default 1).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="Server certificate (PEM).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="Server private key (PEM).")
@click.option("--client-ca", type=click.Path(exists=True, dir_okay=False),
              help="Require client certificates issued by this CA (mTLS).")
@click.option("--allow-plaintext", is_flag=True, default=None,
              help="Serve plain HTTP on an address other than loopback (license keys cross the network in clear).")
@click.option("--env", "environment", default=None, help="Deployment environment (default $PORTCULLIS_ENV or dev).")
@data_option
def serve(host, port, workers, tls_cert, tls_key, client_ca, allow_plaintext, environment, data_dir):
    """Serve the decision API (SIGTERM: drain and stop; SIGHUP: reload policy.toml, and changed callers,
    in every worker; caller changes are picked up within a second anyway)."""
    from gateway import logs
    from gateway.policy import PolicyError, load_policy
    from gateway.tls import transport
    from gateway.workers import serve as run_workers

    settings = settings_for(data_dir, host=host, port=port, workers=workers, tls_cert=tls_cert, tls_key=tls_key,
                            client_ca=client_ca, allow_plaintext=allow_plaintext, environment=environment)
    if not settings.policy_path.exists():
        raise click.ClickException(f"{settings.policy_path} not found: run `portcullis init --data {settings.data_dir}`")
    if bool(settings.tls_cert) != bool(settings.tls_key) or (settings.client_ca and not settings.tls_cert):
        raise click.UsageError("--tls-cert and --tls-key go together; --client-ca needs both")
    if settings.workers < 1:
        raise click.UsageError("--workers must be at least 1")
    exposed = transport(settings.host, bool(settings.tls_cert)) == "plaintext"
    if exposed and not settings.allow_plaintext:
        raise click.UsageError(f"{settings.host or '*'} is not loopback: serving it without TLS would send license keys"
                               " across the network in clear; give --tls-cert and --tls-key, or --allow-plaintext")
    try:
        load_policy(settings.policy_path)  # refused here, with its error, before any worker starts
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from None
    logs.configure(settings.log_level)
    if exposed:
        logging.getLogger("portcullis.serve").warning(
            "serving plaintext on %s: license keys cross the network in clear (allow_plaintext)", settings.host or "*",
            extra={"event": "plaintext_listener", "host": settings.host})
    try:
        status = run_workers(settings, announce=click.echo)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from None
    sys.exit(status)
