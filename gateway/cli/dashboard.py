"""``portcullis dashboard``: serve the ops dashboard (Streamlit) over this data directory.

Streamlit serves it as an ``st.App`` with ``dashboard.gate`` in front of every request (the Host
allow-list, and in proxy mode the proxy-only rule). Without sign-in it binds loopback only unless
the operator opts out. With OIDC the ``[auth]`` secrets Streamlit's ``st.login`` reads are written
to a private file (directory 0700, file 0600, removed at exit) that only this server is pointed
at (``secrets.files``); the client secret and the cookie secret live in their own files
(``keys/`` by default).
"""
from __future__ import annotations

import asyncio
import atexit
import importlib
import os
import shutil
import signal
import sys
import tempfile
from contextlib import asynccontextmanager
from datetime import timedelta
from importlib.util import find_spec
from pathlib import Path

import click
import tomli_w

from gateway import logs
from gateway.cli.common import data_option, settings_for
from gateway.config import Settings

# What the pages import that is slow to load. Streamlit runs in this process, so loading these
# now rather than in the first visitor's script run takes a second or two off the first render.
_PRELOAD = ("pandas", "pyarrow", "duckdb", "plotly.graph_objects", "analytics.registry")


def streamlit_config(host: str, port: int) -> dict[str, object]:
    """Streamlit options for serving, not developing: headless (no browser opened), no usage
    statistics, no file watcher, no developer menu."""
    return {
        "server.address": host,
        "server.port": port,
        "server.headless": True,
        "server.fileWatcherType": "none",
        "browser.gatherUsageStats": False,
        "client.toolbarMode": "viewer",
    }


def oidc_secrets(settings: Settings) -> dict[str, dict[str, str]]:
    """The ``[auth]`` table of Streamlit's secrets for ``st.login``; a one-line error for anything
    missing. The cookie secret is made on first use (``keys/dashboard-cookie.secret``, 0600)."""
    from dashboard.access import redirect_uri
    from gateway.keyfiles import load_or_create_secret

    missing = [name for name in ("dashboard_oidc_metadata_url", "dashboard_oidc_client_id") if not getattr(settings, name)]
    if missing:
        raise click.ClickException(f"dashboard_auth = \"oidc\" needs {' and '.join(missing)} (docs/dashboard.md)")
    secret_path = settings.dashboard_oidc_client_secret_path
    try:
        client_secret = secret_path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise click.ClickException(f"dashboard_oidc_client_secret_file: cannot read {secret_path}: {exc.strerror}") from None
    if not client_secret:
        raise click.ClickException(f"dashboard_oidc_client_secret_file: {secret_path} is empty")
    try:
        callback = redirect_uri(settings)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    return {"auth": {
        "redirect_uri": callback,
        "cookie_secret": load_or_create_secret(settings.dashboard_cookie_secret_path).hex(),
        "client_id": settings.dashboard_oidc_client_id,
        "client_secret": client_secret,
        "server_metadata_url": settings.dashboard_oidc_metadata_url,
    }}


def private_secrets_file(secrets: dict) -> Path:
    """Write ``secrets`` to a fresh private directory (0700, file 0600), removed at exit."""
    from gateway.keyfiles import write_private

    folder = Path(tempfile.mkdtemp(prefix="portcullis-dashboard-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "secrets.toml"
    write_private(path, tomli_w.dumps(secrets).encode())
    return path


UPKEEP_STOP_S = 30.0  # at most this long a stop waits for a rollup build under way


def with_upkeep(root: str, grace: timedelta):
    """An ``st.App`` lifespan running the dashboard's upkeep (``dashboard.upkeep``) while the server
    runs. It starts there, once Streamlit's runtime exists: ``dashboard.data`` imported any sooner
    has each of its ``st.cache_data`` functions check itself against a throwaway in-memory store,
    with a "No runtime found" warning in the log."""
    @asynccontextmanager
    async def lifespan(app):
        from dashboard import upkeep

        thread, stop = upkeep.start(root, grace)
        try:
            yield None
        finally:
            stop.set()
            # Let a build under way finish: a DuckDB query still running in a daemon thread while
            # the interpreter shuts down aborts the process ("terminate called ...").
            await asyncio.to_thread(thread.join, UPKEEP_STOP_S)

    return lifespan


def _exit_on_sigterm(signum, frame) -> None:
    """uvicorn re-raises the SIGTERM it stopped on once it has shut down. Raised as an exit (as
    Ctrl-C's is) rather than taking the default action, it ends the process through ``atexit``,
    which removes the private secrets file."""
    raise SystemExit(128 + signum)


@click.command()
@click.option("--host", default=None, help="Bind address (default 127.0.0.1). Off loopback, sign-in is required "
              "unless --allow-unauthenticated.")
@click.option("--port", type=int, default=None, help="Port (default 8501).")
@click.option("--allow-unauthenticated", is_flag=True, default=None,
              help="Serve an address other than loopback without sign-in (anyone who reaches it sees the data).")
@data_option
def dashboard(host, port, allow_unauthenticated, data_dir):
    """Serve the ops dashboard."""
    from dashboard import access

    settings = settings_for(data_dir, dashboard_host=host, dashboard_port=port,
                            dashboard_allow_unauthenticated=allow_unauthenticated)
    refusal = access.bind_refusal(settings)
    if refusal:
        raise click.ClickException(refusal)
    config = streamlit_config(settings.dashboard_host, settings.dashboard_port)
    if settings.dashboard_auth == "oidc":
        config["secrets.files"] = [str(private_secrets_file(oidc_secrets(settings)))]
    try:
        hosts = access.allowed_hosts(settings)
        proxies = access.proxy_networks(settings) if settings.dashboard_auth == "proxy" else None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    warning = access.unauthenticated_warning(settings)
    if warning:
        click.echo(warning, err=True)

    # The app script reads its settings again in this process: pin what it must agree with.
    os.environ["PORTCULLIS_DATA"] = str(settings.data_dir.resolve())
    os.environ["PORTCULLIS_DASHBOARD_AUTH"] = settings.dashboard_auth
    os.environ["PORTCULLIS_DASHBOARD_PROXY_USER_HEADER"] = settings.dashboard_proxy_user_header
    logs.configure(settings.log_level)  # the upkeep's lines as JSON; Streamlit's own keep their handler
    for module in _PRELOAD:
        importlib.import_module(module)
    import streamlit as st
    from starlette.middleware import Middleware

    from dashboard.gate import Gate

    click.echo(f"portcullis dashboard on http://{settings.dashboard_host}:{settings.dashboard_port} "
               f"(sign-in: {settings.dashboard_auth}; answers to Host {', '.join(sorted(hosts))})")
    script = find_spec("dashboard.app").origin
    app = st.App(script, lifespan=with_upkeep(os.environ["PORTCULLIS_DATA"], settings.hour_closed_after),
                 middleware=[Middleware(Gate, hosts=hosts, proxies=proxies)])
    sys.argv = [script]  # App.run serves the script as `streamlit run <script>` would
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    app.run(config=config)
