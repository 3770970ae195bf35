"""``portcullis demo``: gateway, dashboard and live traffic over a demo data directory."""
from __future__ import annotations

import sys

import click

from gateway.cli.common import settings_for


@click.command()
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default="demo-data", show_default=True,
              help="Demo data directory (created and filled on first use, reused after).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address of the gateway and dashboard.")
@click.option("--port", type=int, default=8080, show_default=True, help="Gateway port.")
@click.option("--dashboard-port", type=int, default=8501, show_default=True, help="Dashboard port.")
@click.option("--no-dashboard", is_flag=True, help="Run without the dashboard.")
@click.option("--duration", type=click.FloatRange(min=1), default=None,
              help="Stop after this many seconds of traffic (default: until Ctrl-C).")
@click.option("--rate", type=click.FloatRange(min=0.01, max=500), default=None,
              help="Live requests per second (default: the synthetic history's rate at this hour of the day, "
                   "so the live hour looks like the ones before it).")
@click.option("--rows", type=click.IntRange(min=1000), default=300_000, show_default=True,
              help="Synthetic audit records for the 30 days of history.")
def demo(data_dir, host, port, dashboard_port, no_dashboard, duration, rate, rows):
    """Everything, with synthetic history and live traffic, in one command."""
    from gateway import logs
    from gateway.demo.run import run

    settings = settings_for(data_dir, host=host, port=port, dashboard_host=host, dashboard_port=dashboard_port)
    logs.configure("warning")
    sys.exit(run(settings, dashboard=not no_dashboard, duration=duration, rate=rate, rows=rows, echo=click.echo))
