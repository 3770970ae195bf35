"""``portcullis serve``: run the gateway on this data directory."""
from __future__ import annotations

import logging

import click
from aiohttp import web

from gateway.cli.common import data_option, settings_for


@click.command()
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8080).")
@click.option("--workers", type=int, default=None, help="Worker processes sharing the port (default 1).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="Server certificate (PEM).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="Server private key (PEM).")
@click.option("--client-ca", type=click.Path(exists=True, dir_okay=False),
              help="Require client certificates issued by this CA (mTLS).")
@click.option("--env", "environment", default=None, help="Deployment environment (default $PORTCULLIS_ENV or dev).")
@data_option
def serve(host, port, workers, tls_cert, tls_key, client_ca, environment, data_dir):
    """Serve the decision API."""
    from gateway.http.app import create_app
    from gateway.http.keys import TLS

    settings = settings_for(data_dir, host=host, port=port, workers=workers, tls_cert=tls_cert, tls_key=tls_key,
                            client_ca=client_ca, environment=environment)
    if not settings.policy_path.exists():
        raise click.ClickException(f"{settings.policy_path} not found: run `portcullis init --data {settings.data_dir}`")
    logging.basicConfig(level=settings.log_level.upper())
    if bool(settings.tls_cert) != bool(settings.tls_key) or (settings.client_ca and not settings.tls_cert):
        raise click.UsageError("--tls-cert and --tls-key go together; --client-ca needs both")
    app = create_app(settings)
    tls = app.get(TLS)
    scheme = "https" if tls else "http"
    web.run_app(app, host=settings.host, port=settings.port, access_log=None,
                ssl_context=tls.context if tls else None,
                print=lambda *_: click.echo(f"portcullis listening on {scheme}://{settings.host}:{settings.port}"))
