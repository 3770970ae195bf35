"""The dashboard's access rules (``dashboard.access``) and ``portcullis dashboard`` refusing to
serve an open address without sign-in. The gate and sign-in themselves are exercised against a
running dashboard in ``test_signin.py``."""
from __future__ import annotations

import subprocess
import sys

import pytest

from dashboard import access
from gateway.config import Settings


def test_it_answers_to_its_loopback_names_its_address_and_the_listed_hosts_only():
    assert access.allowed_hosts(Settings(dashboard_port=8600)) == {"127.0.0.1:8600", "localhost:8600", "[::1]:8600"}
    wide = Settings(dashboard_host="0.0.0.0", dashboard_auth="proxy", dashboard_allowed_hosts="Dash.Example.com, ops:8443")
    assert access.allowed_hosts(wide) == {"127.0.0.1:8501", "localhost:8501", "[::1]:8501", "dash.example.com", "ops:8443"}
    assert "10.1.2.3:8501" in access.allowed_hosts(Settings(dashboard_host="10.1.2.3", dashboard_auth="proxy"))
    oidc = Settings(dashboard_host="0.0.0.0", dashboard_auth="oidc",
                    dashboard_oidc_redirect_uri="https://dash.example.com/oauth2callback")
    assert "dash.example.com" in access.allowed_hosts(oidc)


def test_the_oidc_redirect_uri_defaults_to_the_bound_address_and_is_required_for_a_wildcard():
    assert access.redirect_uri(Settings(dashboard_auth="oidc", dashboard_port=8600)) == "http://127.0.0.1:8600/oauth2callback"
    with pytest.raises(ValueError, match="dashboard_oidc_redirect_uri is required"):
        access.redirect_uri(Settings(dashboard_auth="oidc", dashboard_host="0.0.0.0"))


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_needs_no_sign_in(host):
    assert access.bind_refusal(Settings(dashboard_host=host)) is None
    assert access.unauthenticated_warning(Settings(dashboard_host=host)) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_any_other_address_needs_sign_in_or_an_explicit_opt_out(host):
    assert "without sign-in" in access.bind_refusal(Settings(dashboard_host=host))
    for auth in ("oidc", "proxy"):
        assert access.bind_refusal(Settings(dashboard_host=host, dashboard_auth=auth)) is None
    opted_out = Settings(dashboard_host=host, dashboard_allow_unauthenticated=True)
    assert access.bind_refusal(opted_out) is None
    assert "without sign-in" in access.unauthenticated_warning(opted_out)


def test_proxy_addresses_are_addresses_or_networks():
    assert [str(n) for n in access.proxy_networks(Settings(dashboard_proxy_addresses="10.0.0.0/24, ::1"))] == ["10.0.0.0/24", "::1/128"]
    with pytest.raises(ValueError, match="dashboard_proxy_addresses"):
        access.proxy_networks(Settings(dashboard_proxy_addresses="proxy.local"))


@pytest.mark.parametrize("argv", [["--host", "0.0.0.0"], ["--host", "::"]])
def test_the_cli_refuses_an_open_address_without_sign_in_in_one_line(tmp_path, argv):
    run = subprocess.run([sys.executable, "-m", "gateway", "dashboard", "--data", str(tmp_path), "--port", "1", *argv],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.startswith("Error: refusing to serve the dashboard") and run.stderr.count("\n") == 1
    assert "--allow-unauthenticated" in run.stderr


def test_the_cli_says_what_oidc_is_missing(tmp_path):
    run = subprocess.run([sys.executable, "-m", "gateway", "dashboard", "--data", str(tmp_path), "--port", "1"],
                         capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "PORTCULLIS_DASHBOARD_AUTH": "oidc",
                              "PORTCULLIS_DASHBOARD_OIDC_CLIENT_ID": "portcullis"})
    assert run.returncode == 1
    assert run.stderr == 'Error: dashboard_auth = "oidc" needs dashboard_oidc_metadata_url (docs/dashboard.md)\n'
