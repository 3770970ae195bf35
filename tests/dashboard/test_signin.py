"""Who may see the dashboard, against the real thing: ``portcullis dashboard`` over a small
synthetic history, a real OpenID provider started here (oidc-provider-mock: discovery, its own
login form, code flow, signed ID tokens, registered clients whose secrets it checks), headless
Chromium, and raw HTTP and WebSocket clients for what a browser would not send.

- OIDC: a signed-out visitor gets a sign-in button and no data; signing in through the
  provider's login page in Chromium opens the pages.
- DNS rebinding: a request whose Host is not the dashboard's (a name of the attacker's mapped to
  127.0.0.1) gets 421 and nothing else, page or WebSocket.
- Proxy mode: with the proxy's user header the pages; without it nothing; and nobody but the
  proxy's address is served.
"""
from __future__ import annotations

import json
import socket
import tomllib
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pytest

from analytics.synth import generate
from bench.browser import CHROMEDRIVER, CHROMIUM, chromium, dashboard_server, free_port, wait_rendered

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian chromium and chromium-driver (scripts/setup)"),
]
REFUSED = "is not a name this dashboard answers to"
SIDEBAR = '[data-testid="stSidebar"]'
NO_DATA = ".js-plotly-plot, [data-testid='stDataFrame'], [data-testid='stMetric'], " + SIDEBAR


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("signin") / "data"
    generate(root, end=datetime.now(timezone.utc), days=3, rows=3000, licenses=12, seed=5)
    return root


def customers(root: Path) -> list[str]:
    path = root / "snapshots" / "licenses.parquet"
    return [row[0] for row in duckdb.sql(f"SELECT DISTINCT customer FROM read_parquet('{path}')").fetchall()]


def served(data: Path, log: Path, port: int | None = None, tmpdir: Path | None = None, **settings: str):
    """``portcullis dashboard`` over ``data`` with these settings (``dashboard_auth="proxy"``),
    its temporary files in ``tmpdir``."""
    env = {f"PORTCULLIS_{name.upper()}": value for name, value in settings.items()}
    return dashboard_server(data, log, port=port, settings=env | ({"TMPDIR": str(tmpdir)} if tmpdir else {}))


def raw_get(url: str, path: str = "/", hosts: tuple[str, ...] | None = None, source: str = "127.0.0.1") -> tuple[int, str]:
    """GET ``path`` with exactly these Host headers (default: the URL's), from ``source``."""
    authority = url.removeprefix("http://")
    port = int(authority.rsplit(":", 1)[1])
    lines = [f"GET {path} HTTP/1.1", *(f"Host: {h}" for h in (hosts if hosts is not None else (authority,))),
             "Connection: close", "", ""]
    with socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0)) as sock:
        sock.sendall("\r\n".join(lines).encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(errors="replace")


def websocket_status(url: str, host: str) -> int:
    """Status of a Streamlit WebSocket handshake sent with ``host`` (and a matching Origin, as a
    rebinding page's would be): 101 when accepted."""
    import websocket

    try:
        ws = websocket.create_connection(url.replace("http://", "ws://") + "/_stcore/stream", host=host,
                                         origin=f"http://{host}", timeout=30)
    except websocket.WebSocketBadStatusException as exc:
        return exc.status_code
    ws.close()
    return 101


def wait_text(browser, text: str) -> None:
    """Until the page says ``text`` and its script run has ended (nothing more is coming)."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 90, poll_frequency=0.1).until(lambda d: d.execute_script(
        "return document.body.innerText.includes(arguments[0]) && !document.querySelector("
        "'[data-testid=\"stStatusWidget\"] [data-testid^=\"stStatusWidgetRunning\"]')", text))


def assert_shows_nothing(browser, root: Path) -> None:
    from selenium.webdriver.common.by import By

    assert not browser.find_elements(By.CSS_SELECTOR, NO_DATA)
    page = browser.page_source
    assert not [name for name in customers(root) if name in page]


@pytest.fixture(scope="module")
def provider():
    """A real OpenID provider on a free port; clients must be registered (their secrets are checked)."""
    from oidc_provider_mock import run_server_in_thread

    with run_server_in_thread(require_client_registration=True) as server:
        yield f"http://localhost:{server.server_port}"


def register(provider: str, redirect_uri: str) -> dict:
    request = urllib.request.Request(f"{provider}/oauth2/clients", data=json.dumps({"redirect_uris": [redirect_uri]}).encode(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def oidc_tmp(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("oidc")
    (tmp / "run").mkdir()
    return tmp


@pytest.fixture(scope="module")
def oidc(data, provider, oidc_tmp):
    """The dashboard with OIDC sign-in against ``provider``, its temporary files in ``<tmp>/run``.
    Once it has stopped, its private secrets file is gone and its log carries no secret."""
    tmp = oidc_tmp
    port = free_port()
    client = register(provider, f"http://127.0.0.1:{port}/oauth2callback")
    secret = tmp / "client.secret"
    secret.write_text(client["client_secret"])
    secret.chmod(0o600)
    log = tmp / "dashboard.log"
    with served(data, log, port, tmp / "run", dashboard_auth="oidc", dashboard_oidc_client_id=client["client_id"],
                dashboard_oidc_metadata_url=f"{provider}/.well-known/openid-configuration",
                dashboard_oidc_client_secret_file=str(secret)) as url:
        yield url
    assert not list((tmp / "run").glob("portcullis-dashboard-*"))
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text
    assert client["client_secret"] not in text
    assert (data / "keys" / "dashboard-cookie.secret").read_text().strip() not in text


@pytest.fixture(scope="module")
def open_loopback(data, tmp_path_factory):
    """The dashboard as ``portcullis demo`` runs it: no sign-in, loopback."""
    with served(data, tmp_path_factory.mktemp("open") / "dashboard.log") as url:
        yield url


@pytest.fixture(scope="module")
def proxied(data, tmp_path_factory):
    """The dashboard behind a trusted proxy (default: on this machine, header X-Forwarded-User)."""
    with served(data, tmp_path_factory.mktemp("proxy") / "dashboard.log", dashboard_auth="proxy") as url:
        yield url


@pytest.fixture
def browser(tmp_path):
    with chromium(tmp_path / "profile", "--host-resolver-rules=MAP rebind.test 127.0.0.1") as driver:
        yield driver


def test_signed_out_visitors_get_a_sign_in_button_and_no_data_until_they_sign_in(browser, oidc, provider, data):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(oidc)
    wait_text(browser, "Sign in to see the dashboard.")
    assert_shows_nothing(browser, data)

    next(b for b in browser.find_elements(By.TAG_NAME, "button") if "Sign in" in b.text).click()
    subject = WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.NAME, "sub"))
    assert browser.current_url.startswith(f"{provider}/oauth2/authorize")  # the provider's own login page
    subject[0].send_keys("alice@example.com")
    next(b for b in browser.find_elements(By.TAG_NAME, "button") if b.text == "Authorize").click()

    wait_rendered(browser, "Overview", 2)
    assert "Signed in as alice@example.com" in browser.find_element(By.CSS_SELECTOR, SIDEBAR).text


def test_oidc_secrets_reach_streamlit_only_through_a_private_file(oidc, oidc_tmp, data):
    (secrets,) = (oidc_tmp / "run").glob("portcullis-dashboard-*/secrets.toml")
    assert (secrets.parent.stat().st_mode & 0o777, secrets.stat().st_mode & 0o777) == (0o700, 0o600)
    auth = tomllib.loads(secrets.read_text())["auth"]
    assert auth["client_secret"] == (oidc_tmp / "client.secret").read_text()
    assert auth["cookie_secret"] == (data / "keys" / "dashboard-cookie.secret").read_text().strip()
    assert (data / "keys" / "dashboard-cookie.secret").stat().st_mode & 0o777 == 0o600


def test_a_foreign_host_gets_nothing_page_or_websocket(browser, open_loopback, data):
    from selenium.webdriver.common.by import By

    port = open_loopback.rsplit(":", 1)[1]
    browser.get(f"http://rebind.test:{port}/?page=licenses")  # a rebinding page: its name, our address
    assert REFUSED in browser.find_element(By.TAG_NAME, "body").text
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stApp"]')
    assert_shows_nothing(browser, data)

    for path in ("/", "/_stcore/health", "/_stcore/host-config", "/auth/login", "/static/index.html"):
        status, body = raw_get(open_loopback, path, hosts=(f"rebind.test:{port}",))
        assert (status, REFUSED in body) == (421, True), path
    assert raw_get(open_loopback, hosts=(f"127.0.0.1:{int(port) + 1}",))[0] == 421  # the name, another port
    for hosts in ((), (f"127.0.0.1:{port}", f"rebind.test:{port}")):  # none, or two: the server or the gate refuses
        assert raw_get(open_loopback, hosts=hosts)[0] in (400, 421), hosts
    assert websocket_status(open_loopback, f"rebind.test:{port}") == 403
    assert websocket_status(open_loopback, f"localhost:{port}") == 101

    browser.get(f"http://localhost:{port}/?page=licenses")  # the same browser, the dashboard's own name
    wait_rendered(browser, "Licenses", 3)


def test_behind_a_proxy_the_user_header_opens_the_pages_and_nothing_else_does(browser, proxied, data):
    from selenium.webdriver.common.by import By

    browser.get(proxied)
    wait_text(browser, "No signed-in user")
    assert_shows_nothing(browser, data)

    browser.execute_cdp_cmd("Network.enable", {})  # what the proxy adds to every request, WebSocket included
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"X-Forwarded-User": "bob@example.com"}})
    browser.get(proxied)
    wait_rendered(browser, "Overview", 2)
    assert "Signed in as bob@example.com" in browser.find_element(By.CSS_SELECTOR, SIDEBAR).text

    # Only the proxy may connect: another address on this machine is refused, header or not.
    assert raw_get(proxied, "/_stcore/health")[0] == 200
    assert raw_get(proxied, "/_stcore/health", source="127.0.0.2")[0] == 403
