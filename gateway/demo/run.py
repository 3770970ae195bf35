"""``portcullis demo``: prepare the data, start the gateway and the dashboard as the real commands
(``portcullis serve``, ``portcullis dashboard``), send live traffic, and stop everything cleanly.

The services run in sessions of their own, so a Ctrl-C reaches only this process, which then
stops them in order: traffic first, then the gateway with SIGTERM (it drains and flushes its
audit trail), then the dashboard. Their logs go to ``<data>/logs/`` to keep the terminal readable.
"""
from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from gateway.config import Settings
from gateway.demo.data import HISTORY_DAYS, prepare, state_path
from gateway.demo.traffic import Traffic, history_rate
from gateway.workers import die_with

STOP_TIMEOUT_S = 60.0


class Service:
    """A ``portcullis`` subcommand running as a child process, with its log file."""

    def __init__(self, name: str, argv: list[str], logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.name, self.log = name, logs / f"{name}.log"
        with self.log.open("ab") as out:
            # Own session (Ctrl-C reaches the demo, which stops each service in order), but the
            # service stops gracefully if the demo is killed: no orphan keeps the ports.
            self.proc = subprocess.Popen([sys.executable, "-m", "gateway", *argv], stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=functools.partial(die_with, os.getpid(), signal.SIGTERM))

    def wait_healthy(self, url: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return True
            except OSError:
                time.sleep(0.2)
        return False

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def run(settings: Settings, *, dashboard: bool, duration: float | None, rate: float | None, rows: int,
        echo: Callable[[str], None]) -> int:
    """Run the demo until Ctrl-C, SIGTERM or ``duration`` seconds of traffic; the exit status.
    ``rate`` None: the synthetic history's own rate at this hour of the day."""
    state = prepare(settings, rows, echo)
    rate = rate or history_rate(rows, HISTORY_DAYS, datetime.now(timezone.utc))
    data, logs = str(settings.data_dir), settings.data_dir / "logs"
    gateway_url = f"http://{settings.host}:{settings.port}"
    services = [Service("gateway", ["serve", "--data", data, "--host", settings.host, "--port", str(settings.port)],
                        logs)]
    try:
        if not services[0].wait_healthy(gateway_url + "/readyz", 30):
            echo(f"the gateway did not start; see {services[0].log}")
            return 1
        echo(f"gateway    {gateway_url}  (metrics: {gateway_url}/metrics, API: {gateway_url}/openapi.json)")
        if dashboard:
            board_url = f"http://{settings.dashboard_host}:{settings.dashboard_port}"
            services.append(Service("dashboard", ["dashboard", "--data", data, "--host", settings.dashboard_host,
                                                  "--port", str(settings.dashboard_port)], logs))
            if services[1].wait_healthy(board_url + "/_stcore/health", 60):
                echo(f"dashboard  {board_url}")
            else:
                echo(f"the dashboard did not start; see {services[1].log}")
        echo(f"logs in {logs}/; demo credentials (for `portcullis call`) in {state_path(settings)}")
        echo(f"sending live traffic, {rate * 3600:,.0f} requests an hour; Ctrl-C stops everything"
             + (f" (or after {duration:g} s)" if duration else ""))
        traffic = Traffic(gateway_url, state, rate)
        asyncio.run(_drive(traffic, duration, echo))
        echo(traffic.summary())
    finally:
        echo("stopping")
        codes = {service.name: service.stop() for service in services}
    if codes["gateway"] != 0:
        echo(f"the gateway exited with status {codes['gateway']}; see {services[0].log}")
        return 1
    return 0


async def _drive(traffic: Traffic, duration: float | None, echo: Callable[[str], None]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signo in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signo, stop.set)
    if duration:
        loop.call_later(duration, stop.set)
    await traffic.run(stop, echo)
