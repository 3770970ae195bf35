"""The dashboard in headless Chromium: start ``portcullis dashboard``, open a page, wait until it is
drawn. Shared by the browser test and ``bench/dashboard.py`` so both measure the same thing.

Chromium and its driver are Debian's (``chromium``, ``chromium-driver``); Selenium is pointed at
them explicitly so it never tries to download a browser.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from dashboard.views.layout import LOADING

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM_ARGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1440,2200",
)
# Present in the DOM only while a Streamlit script run is in progress.
# Whether a page is drawn: its header reads arguments[0]; arguments[1] Plotly charts (or, for
# none, a table) are drawn, none of them still the placeholder a page shows before its reports
# are in (arguments[2]); and no script run is in progress. One script per poll: a WebDriver
# command per condition would take the renderer's main thread from the page being timed.
_RENDERED = """
const [title, charts, loading] = arguments;
const headers = [...document.querySelectorAll('[data-testid="stHeading"] h2')].map(h => h.innerText.trim());
const drawn = charts ? document.querySelectorAll('.js-plotly-plot .main-svg').length >= charts
                     : document.querySelector('[data-testid="stDataFrame"]') !== null;
const running = document.querySelector('[data-testid="stStatusWidget"] [data-testid^="stStatusWidgetRunning"]');
const placeholders = [...document.querySelectorAll('.js-plotly-plot .annotation-text')]
    .filter(e => e.textContent === loading).length;
return headers.includes(title) && drawn && running === null && placeholders === 0;
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def dashboard_server(data: Path, log: Path, timeout: float = 60, port: int | None = None,
                     settings: dict[str, str] | None = None) -> Iterator[str]:
    """``portcullis dashboard --data <data>`` on ``port`` (default: a free one) until the block
    ends; yields its URL. Everything it prints goes to ``log``. ``settings`` are ``PORTCULLIS_*``
    variables for it (``{"PORTCULLIS_DASHBOARD_AUTH": "oidc", ...}``)."""
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if k != "PORTCULLIS_DATA"} | (settings or {})
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "dashboard", "--port", str(port), "--data", str(data)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, timeout)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_logged(log: Path, event: str, timeout: float = 120) -> None:
    """Until the dashboard's log (its JSON lines) names ``event``: ``attention_evaluated`` once
    its upkeep has evaluated the Overview's attention list, as on any dashboard that has been up
    a few seconds."""
    needle = f'"event": "{event}"'.encode()
    deadline = time.monotonic() + timeout
    while needle not in log.read_bytes():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {event} in {log} after {timeout}s")
        time.sleep(0.05)


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"portcullis dashboard exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} not healthy after {timeout}s")


@contextmanager
def chromium(profile: Path, *args: str):
    """A headless Chromium WebDriver with a fresh profile in ``profile`` and any more ``args``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM and CHROMEDRIVER):
        raise RuntimeError("needs Debian chromium and chromium-driver (scripts/setup)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (*CHROMIUM_ARGS, f"--user-data-dir={profile}", *args):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_rendered(driver, title: str, charts: int, timeout: float = 90) -> None:
    """Until the page's header reads ``title``, ``charts`` Plotly charts (or, for none, a table)
    are drawn, none of them still a "Loading…" placeholder, and no script run is in progress."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout, poll_frequency=0.05).until(
        lambda d: d.execute_script(_RENDERED, title, charts, LOADING))
