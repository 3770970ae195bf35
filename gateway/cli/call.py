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

WAIT_STEP_S = 0.2


@click.command()
@click.argument("method", type=click.Choice(["GET", "POST"], case_sensitive=False))
@click.argument("path")
@click.argument("body", required=False, default="")
@click.option("--url", default=lambda: os.environ.get("PORTCULLIS_URL", "http://127.0.0.1:8080"),
              show_default="$PORTCULLIS_URL or http://127.0.0.1:8080", help="Gateway base URL.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds.")
@click.option("--wait", "wait_s", type=float, default=0.0, metavar="SECONDS",
              help="While nothing listens at the URL yet (a gateway just started), keep trying for up to SECONDS.")
def call(method: str, path: str, body: str, url: str, timeout: float, wait_s: float) -> None:
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
    deadline = time.monotonic() + wait_s
    while True:
        try:
            status, payload = _send(request, timeout)
            break
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            # Only a refused connection is retried: the request never left, so sending it again
            # (same nonce) cannot make the gateway decide twice.
            if not isinstance(reason, ConnectionRefusedError) or time.monotonic() >= deadline:
                raise click.ClickException(f"cannot reach {url}: {reason}") from None
            time.sleep(WAIT_STEP_S)
    try:
        click.echo(json.dumps(json.loads(payload), indent=2))
    except ValueError:
        click.echo(payload.decode(errors="replace"))
    sys.exit(0 if 200 <= status < 300 else 1)


def _send(request: urllib.request.Request, timeout: float) -> tuple[int, bytes]:
    """The answer's status and body, whatever the status."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
