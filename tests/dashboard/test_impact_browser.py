"""The Licenses page's Impact view in a real browser: a pasted proposal's changed decisions over
time and by customer; a malformed one is refused by file, tier and field, with nothing replayed."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.browser import CHROMEDRIVER, CHROMIUM, chromium, dashboard_server, wait_rendered
from gateway.admin import publish_snapshots
from tests.impact_history import LOOK_BACK_DAYS, PROPOSED, plant

ARTIFACTS = Path(__file__).parents[1] / "artifacts"
EXCEPTION = '[data-testid="stException"]'
LICENSE_CHARTS = 3  # the page's own, before any replay

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian chromium and chromium-driver (scripts/setup)"),
]


@pytest.fixture
def impact_page(data_dir, tmp_path):
    plant(data_dir)
    with data_dir.store() as store:
        publish_snapshots(data_dir.settings, store)
    with dashboard_server(data_dir.path, tmp_path / "dashboard.log") as url, \
            chromium(tmp_path / "chromium-profile", "--window-size=1400,3000") as browser:
        browser.get(f"{url}/?page=licenses")
        wait_rendered(browser, "Licenses", LICENSE_CHARTS)
        yield browser
    assert b"Traceback" not in (tmp_path / "dashboard.log").read_bytes()


def _replay(browser, policy: str) -> None:
    """Type ``policy`` and the look-back into the Impact form and submit it. The page re-renders on
    its auto-refresh timer, so each step finds its elements afresh and checks what it typed."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60, poll_frequency=0.2,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
    fields = ((By.TAG_NAME, "textarea", policy), (By.CSS_SELECTOR, 'input[type="number"]', str(LOOK_BACK_DAYS)))

    def typed(d) -> bool:
        form = d.find_element(By.CSS_SELECTOR, '[data-testid="stForm"]')
        for by, what, text in fields:
            field = form.find_element(by, what)
            if field.get_property("value") != text:
                field.send_keys(Keys.CONTROL, "a")
                field.send_keys(Keys.DELETE)
                field.send_keys(text)
        return all(form.find_element(by, what).get_property("value") == text for by, what, text in fields)

    def submitted(d) -> bool:
        d.find_element(By.CSS_SELECTOR, '[data-testid="stForm"] [data-testid="stFormSubmitButton"] button').click()
        return True
    wait.until(typed)
    wait.until(submitted)


def _text_of(browser, css: str, containing: str, timeout: float = 90) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def found(d):
        return next((e.text for e in d.find_elements(By.CSS_SELECTOR, css) if containing in e.text), None)
    return WebDriverWait(browser, timeout, poll_frequency=0.1).until(found)


def test_impact_view_shows_a_pasted_policy_s_changes(impact_page):
    from selenium.webdriver.common.by import By

    browser = impact_page
    _replay(browser, PROPOSED)
    metric = _text_of(browser, '[data-testid="stMetric"]', "Decisions that would change")
    assert metric.splitlines()[-1] == "7"
    check = _text_of(browser, '[data-testid="stAlert"]', "Self-check")
    assert "reproduces 19 of 19 recorded decisions" in check
    wait_rendered(browser, "Licenses", LICENSE_CHARTS + 2)
    charts = [c.text for c in browser.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")]
    assert any("Changed decisions over time" in c for c in charts)
    by_customer = next(c for c in charts if "Changed decisions by customer" in c)
    assert all(name in by_customer for name in ("acme", "globex", "initech"))
    assert "hooli" not in by_customer and "umbrella" not in by_customer
    assert not browser.find_elements(By.CSS_SELECTOR, EXCEPTION)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "dashboard-impact.png"))


def test_malformed_policy_is_refused_by_tier_and_field(impact_page):
    from selenium.webdriver.common.by import By

    browser = impact_page
    _replay(browser, PROPOSED.replace("seats = 3", 'seats = "three"'))
    error = _text_of(browser, '[data-testid="stAlert"]', "Nothing replayed")
    assert "pasted policy: tier 'basic'.seats: must be an integer, got 'three'" in error
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stMetric"]')
    assert len(browser.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")) == LICENSE_CHARTS
