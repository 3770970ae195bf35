"""The dashboard in a real browser: ``portcullis dashboard`` over real Parquet, every page opened
in headless Chromium by its own URL with a time range in the query string, its Plotly charts drawn,
no Streamlit exception shown; the Overview's attention list over planted trouble, each of its links
followed to its page, and the back button. A screenshot of each page is left in
``tests/artifacts/`` for a human to look at."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pyarrow.parquet as pq
import pytest

from bench.browser import CHROMEDRIVER, CHROMIUM, chromium, dashboard_server, wait_rendered
from dashboard.views import PAGES

ARTIFACTS = Path(__file__).parents[1] / "artifacts"
CHARTS = {"overview": 2, "customers": 5, "licenses": 3, "keys": 2, "security": 3, "explorer": 0}
EXCEPTION = '[data-testid="stException"]'
ATTENTION = ".st-key-attention"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian chromium and chromium-driver (scripts/setup)"),
]


def serve(data: Path, tmp_path_factory):
    log = tmp_path_factory.mktemp("dashboard-log") / "dashboard.log"
    with dashboard_server(data, log) as url:
        yield url
    assert b"Traceback" not in log.read_bytes(), log.read_text(errors="replace")


@pytest.fixture(scope="module")
def dashboard_url(history, tmp_path_factory):
    yield from serve(history, tmp_path_factory)


@pytest.fixture(scope="module")
def troubled_url(troubled, tmp_path_factory):
    yield from serve(troubled, tmp_path_factory)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


def landed(browser) -> tuple[str, dict[str, list[str]]]:
    """The page path and query the browser is at."""
    url = urlsplit(browser.current_url)
    return url.path, parse_qs(url.query)


def shown_range(browser) -> str:
    from selenium.webdriver.common.by import By

    box = browser.find_element(By.CSS_SELECTOR, '[data-testid="stSidebar"] [data-testid="stSelectbox"]')
    return box.get_attribute("textContent") + " " + " ".join(
        i.get_attribute("value") or "" for i in box.find_elements(By.TAG_NAME, "input"))


@pytest.mark.parametrize("slug", list(PAGES))
def test_every_page_opens_by_its_url_with_its_time_range(browser, dashboard_url, history, slug):
    from selenium.webdriver.common.by import By

    customer = pq.read_table(history / "snapshots" / "licenses.parquet")["customer"][0].as_py()
    query = f"range=24h&customer={customer}" if slug == "customers" else "range=24h"
    browser.get(f"{dashboard_url}/{slug}?{query}")
    wait_rendered(browser, PAGES[slug].title, CHARTS[slug])
    assert not browser.find_elements(By.CSS_SELECTOR, EXCEPTION)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")) == CHARTS[slug]
    assert "Last 24 hours" in shown_range(browser)
    path, params = landed(browser)
    assert path == ("/" if slug == "overview" else f"/{slug}") and params["range"] == ["24h"]
    if slug == "customers":
        assert params["customer"] == [customer]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"dashboard-{slug}.png"))


def test_attention_lists_the_planted_trouble_and_links_to_each_page(browser, troubled_url):
    """Every planted case is named; each item's link opens its page with the same time range;
    the back button returns to the Overview with its range."""
    from selenium.webdriver.common.by import By

    overview = f"{troubled_url}/?range=24h"
    browser.get(overview)
    wait_rendered(browser, "Overview", CHARTS["overview"])
    box = browser.find_element(By.CSS_SELECTOR, ATTENTION)
    for planted in ("hooli · lic_quota · export", "wayne · lic_seats (12/10 seats)", "fp-lic_revoked",
                    "scanner (12 unknown keys)", "caller batch", "stark · fp-lic_healthy", "acme · lic_expiring"):
        assert planted in box.text, box.text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "dashboard-attention.png"))
    targets = [a.text.split("\n")[-1] for a in box.find_elements(By.CSS_SELECTOR, "a")]  # after the icon
    assert targets == ["Licenses", "Licenses", "Keys", "Security", "Security", "Keys", "Licenses"]

    for i, title in enumerate(targets):
        if i:
            browser.get(overview)
            wait_rendered(browser, "Overview", CHARTS["overview"])
        browser.find_element(By.CSS_SELECTOR, ATTENTION).find_elements(By.CSS_SELECTOR, "a")[i].click()
        slug = next(s for s, p in PAGES.items() if p.title == title)
        wait_rendered(browser, title, CHARTS[slug])
        assert landed(browser) == (f"/{slug}", {"range": ["24h"]})
        assert "Last 24 hours" in shown_range(browser)

    browser.back()
    wait_rendered(browser, "Overview", CHARTS["overview"])
    assert landed(browser) == ("/", {"range": ["24h"]})
    assert "Last 24 hours" in shown_range(browser)


def test_the_default_view_shows_the_attention_list_evaluated_ahead(browser, troubled, troubled_url):
    """Opened at its default range, the Overview shows the upkeep's evaluation, when it was made,
    and the same items the page would have found itself."""
    from functools import partial

    from selenium.webdriver.common.by import By

    from dashboard import attention, data, watch

    expected = attention.gather(partial(data.query, str(troubled)), watch.default_view())
    browser.get(troubled_url)
    wait_rendered(browser, "Overview", CHARTS["overview"])
    box = browser.find_element(By.CSS_SELECTOR, ATTENTION)
    assert "Checked at" in box.text, box.text
    assert expected and all(item.headline in box.text for item in expected), box.text
