"""The dashboard in a real browser: ``portcullis dashboard`` over a synthetic history, every page
opened in headless Chromium, its Plotly charts drawn, no Streamlit exception shown. A screenshot
of each page is left in ``tests/artifacts/`` for a human to look at."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dashboard.views import PAGES

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(__file__).parents[1] / "artifacts"
CHARTS = {"overview": 2, "licenses": 3, "keys": 2, "security": 3, "explorer": 0}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian chromium and chromium-driver (scripts/setup)"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"portcullis dashboard exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"{url} not healthy after {timeout}s")


@pytest.fixture(scope="module")
def dashboard_url(history, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("dashboard-log") / "dashboard.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "dashboard", "--port", str(port), "--data", str(history)],
            stdout=out, stderr=subprocess.STDOUT, env={k: v for k, v in os.environ.items() if k != "PORTCULLIS_DATA"},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert b"Traceback" not in log.read_bytes(), log.read_text(errors="replace")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1440,2200",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait_rendered(driver, title: str, charts: int, timeout: float = 90) -> None:
    """Until the page's header reads ``title``, its charts (or, without charts, a table) are drawn
    and the script has finished running."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def rendered(d) -> bool:
        headers = [h.text for h in d.find_elements(By.CSS_SELECTOR, '[data-testid="stHeading"] h2')]
        drawn = (len(d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .main-svg")) >= charts if charts
                 else bool(d.find_elements(By.CSS_SELECTOR, '[data-testid="stDataFrame"]')))
        running = d.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"] [data-testid="stStatusWidgetRunningIcon"]')
        return title in headers and drawn and not running

    WebDriverWait(driver, timeout, poll_frequency=0.25).until(rendered)


@pytest.mark.parametrize("slug", list(PAGES))
def test_every_page_renders_in_chromium(browser, dashboard_url, slug):
    from selenium.webdriver.common.by import By

    browser.get(f"{dashboard_url}/?page={slug}")
    _wait_rendered(browser, PAGES[slug].title, CHARTS[slug])
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    assert len(browser.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")) == CHARTS[slug]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"dashboard-{slug}.png"))


def test_sidebar_switches_page_and_url(browser, dashboard_url):
    from selenium.webdriver.common.by import By

    browser.get(f"{dashboard_url}/?page=overview")
    _wait_rendered(browser, "Overview", CHARTS["overview"])
    radio = browser.find_element(By.CSS_SELECTOR, '[data-testid="stSidebar"] [data-testid="stRadio"]')
    next(label for label in radio.find_elements(By.TAG_NAME, "label") if label.text == "Security").click()
    _wait_rendered(browser, "Security", CHARTS["security"])
    assert browser.current_url.endswith("?page=security")
