"""``portcullis dashboard``: serve the ops dashboard (Streamlit) over this data directory."""
from __future__ import annotations

import importlib
import os
from importlib.util import find_spec

import click

from gateway.cli.common import data_option, settings_for

# What the pages import that is slow to load. Streamlit runs in this process, so loading these
# now rather than in the first visitor's script run takes a second or two off the first render.
_PRELOAD = ("pandas", "pyarrow", "duckdb", "plotly.graph_objects", "analytics.registry")


def streamlit_args(app: str, host: str, port: int) -> list[str]:
    """``streamlit run`` arguments for serving, not developing: headless (no browser opened), no
    usage statistics, no file watcher, no developer menu."""
    return [
        "run", app,
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
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
    os.environ["PORTCULLIS_DATA"] = str(settings.data_dir.resolve())
    for module in _PRELOAD:
        importlib.import_module(module)
    from streamlit.web.cli import main as streamlit

    from dashboard import upkeep

    upkeep.start(os.environ["PORTCULLIS_DATA"], settings.hour_closed_after)

    click.echo(f"portcullis dashboard on http://{settings.dashboard_host}:{settings.dashboard_port}")
    streamlit.main(args=streamlit_args(find_spec("dashboard.app").origin, settings.dashboard_host,
                                       settings.dashboard_port), prog_name="streamlit")
