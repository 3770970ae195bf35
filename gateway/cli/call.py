"""``portcullis call``: a signing client for operators, to try the port without writing code."""
from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request

import click

from gateway.auth import signed_headers


@click.command()
@click.argument("method", type=click.Choice(["GET", "POST"], case_sensitive=False))
@click.argument("path")
@click.argument("body", required=False, default="")
@click.option("--url", default=lambda: os.environ.get("PORTCULLIS_URL", "http://127.0.0.1:8080"),
              show_default="$PORTCULLIS_URL or http://127.0.0.1:8080", help="Gateway base URL.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds.")
def call(method: str, path: str, body: str, url: str, timeout: float) -> None:
    """Send METHOD PATH [BODY] signed with $PORTCULLIS_KEY_ID / $PORTCULLIS_SECRET; print the answer.

    BODY is JSON text, or @FILE to read it from a file. Exits 0 on a 2xx answer, 1 otherwise.
    """
    key_id, secret = os.environ.get("PORTCULLIS_KEY_ID"), os.environ.get("PORTCULLIS_SECRET")
    if not key_id or not secret:
        raise click.ClickException("set PORTCULLIS_KEY_ID and PORTCULLIS_SECRET (from `portcullis caller add`)")
    if body.startswith("@"):
        with open(body[1:], "rb") as handle:
            data = handle.read()
    else:
        data = body.encode()
    method = method.upper()
    headers = signed_headers(key_id, secret, method, path, data, time.time())
    if data:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url.rstrip("/") + path, data=data or None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise click.ClickException(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None
    try:
        click.echo(json.dumps(json.loads(payload), indent=2))
    except ValueError:
        click.echo(payload.decode(errors="replace"))
    sys.exit(0 if 200 <= status < 300 else 1)
