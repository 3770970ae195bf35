"""``portcullis dashboard``: serve the ops dashboard (Streamlit) over this data directory."""
from __future__ import annotations

import os
import sys
from importlib.util import find_spec
from pathlib import Path

import click

from gateway.cli.common import data_option, settings_for


def streamlit_argv(app: Path, host: str, port: int) -> list[str]:
    """The ``streamlit run`` command line: headless, so it neither opens a browser nor phones home."""
    return [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",
    ]


@click.command()
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8501).")
@data_option
def dashboard(host, port, data_dir):
    """Serve the ops dashboard."""
    settings = settings_for(data_dir, dashboard_host=host, dashboard_port=port)
    app = Path(find_spec("dashboard.app").origin)
    env = {**os.environ, "PORTCULLIS_DATA": str(settings.data_dir.resolve())}
    argv = streamlit_argv(app, settings.dashboard_host, settings.dashboard_port)
    click.echo(f"portcullis dashboard on http://{settings.dashboard_host}:{settings.dashboard_port}")
    # exec, not a child process: signals (Ctrl-C, a supervisor's SIGTERM) reach Streamlit directly.
    os.execve(sys.executable, argv, env)
