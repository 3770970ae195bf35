"""The dashboard in a real browser: ``portcullis dashboard`` over a synthetic history, every page
opened in headless Chromium, its Plotly charts drawn, no Streamlit exception shown. A screenshot
of each page is left in ``tests/artifacts/`` for a human to look at."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.browser import CHROMEDRIVER, CHROMIUM, chromium, dashboard_server, wait_rendered
from dashboard.views import PAGES

ARTIFACTS = Path(__file__).parents[1] / "artifacts"
CHARTS = {"overview": 2, "licenses": 3, "keys": 2, "security": 3, "explorer": 0}
EXCEPTION = '[data-testid="stException"]'

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian chromium and chromium-driver (scripts/setup)"),
]


@pytest.fixture(scope="module")
def dashboard_url(history, tmp_path_factory):
    log = tmp_path_factory.mktemp("dashboard-log") / "dashboard.log"
    with dashboard_server(history, log) as url:
        yield url
    assert b"Traceback" not in log.read_bytes(), log.read_text(errors="replace")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


@pytest.mark.parametrize("slug", list(PAGES))
def test_every_page_renders_in_chromium(browser, dashboard_url, slug):
    from selenium.webdriver.common.by import By

    browser.get(f"{dashboard_url}/?page={slug}")
    wait_rendered(browser, PAGES[slug].title, CHARTS[slug])
    assert not browser.find_elements(By.CSS_SELECTOR, EXCEPTION)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")) == CHARTS[slug]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"dashboard-{slug}.png"))


def test_sidebar_switches_page_and_url(browser, dashboard_url):
    from selenium.webdriver.common.by import By

    browser.get(f"{dashboard_url}/?page=overview")
    wait_rendered(browser, "Overview", CHARTS["overview"])
    radio = browser.find_element(By.CSS_SELECTOR, '[data-testid="stSidebar"] [data-testid="stRadio"]')
    next(label for label in radio.find_elements(By.TAG_NAME, "label") if label.text == "Security").click()
    wait_rendered(browser, "Security", CHARTS["security"])
    assert not browser.find_elements(By.CSS_SELECTOR, EXCEPTION)
    assert browser.current_url.endswith("?page=security")
