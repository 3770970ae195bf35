"""Who may reach the dashboard, as pure rules over the settings: the Host names it answers to,
the addresses it may bind without sign-in, and the peers a trusted proxy speaks from.

The dashboard shows customer data and runs SQL, so it is a door like the gateway's port. A
browser is made to talk to it by any page it visits (DNS rebinding: a name of the attacker's
that resolves to 127.0.0.1), so the server answers only to the names it is reached by; and
without sign-in it serves loopback only, unless the operator says otherwise. ``dashboard.gate``
enforces the first in front of every request, ``portcullis dashboard`` the second at start-up,
and ``dashboard.signin`` decides who is looking.
"""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from gateway.config import Settings

WILDCARDS = frozenset({"", "0.0.0.0", "::"})
CALLBACK_PATH = "/oauth2callback"  # Streamlit's OIDC callback route


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _authority(host: str, port: int) -> str:
    """``host:port`` as a Host header carries it (IPv6 literals in brackets)."""
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _items(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def redirect_uri(settings: Settings) -> str:
    """Where the OpenID provider sends a visitor back: the setting, else this server's own
    address. Visitors must open the dashboard on this URI's origin (the sign-in state is a
    cookie of that origin), so a wildcard bind needs the setting."""
    if settings.dashboard_oidc_redirect_uri:
        return settings.dashboard_oidc_redirect_uri
    if settings.dashboard_host in WILDCARDS:
        raise ValueError(f"dashboard_oidc_redirect_uri is required when the dashboard binds "
                         f"{settings.dashboard_host or 'every address'}: set it to the URL visitors open, "
                         f"followed by {CALLBACK_PATH}")
    return f"http://{_authority(settings.dashboard_host, settings.dashboard_port)}{CALLBACK_PATH}"


def allowed_hosts(settings: Settings) -> frozenset[str]:
    """Every Host header value the dashboard answers to, lower case: its loopback names on its
    port, the address it binds (unless a wildcard), the OIDC redirect URI's authority, and the
    ``dashboard_allowed_hosts`` an operator lists (``name`` or ``name:port``, exactly as browsers
    send them: no port for 80 and 443)."""
    port = settings.dashboard_port
    hosts = {_authority(name, port) for name in ("127.0.0.1", "localhost", "::1")}
    if settings.dashboard_host not in WILDCARDS:
        hosts.add(_authority(settings.dashboard_host, port))
    if settings.dashboard_auth == "oidc" and (settings.dashboard_oidc_redirect_uri or settings.dashboard_host not in WILDCARDS):
        hosts.add(urlsplit(redirect_uri(settings)).netloc)
    hosts.update(_items(settings.dashboard_allowed_hosts))
    return frozenset(host.lower() for host in hosts)


def proxy_networks(settings: Settings) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """The addresses (or networks, ``10.0.0.0/24``) the trusted proxy connects from; in proxy mode
    nobody else is served, so a visitor cannot reach the dashboard around the proxy and forge its
    header."""
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in _items(settings.dashboard_proxy_addresses))
    except ValueError as exc:
        raise ValueError(f"dashboard_proxy_addresses: {exc}") from None


def bind_refusal(settings: Settings) -> str | None:
    """Why ``portcullis dashboard`` must not start on its address, or None. Without sign-in only
    loopback is served, unless ``dashboard_allow_unauthenticated`` (``--allow-unauthenticated``)."""
    host = settings.dashboard_host
    if settings.dashboard_auth != "none" or is_loopback(host) or settings.dashboard_allow_unauthenticated:
        return None
    return (f"refusing to serve the dashboard on {host or 'every address'} without sign-in: it shows customer "
            f"data and runs SQL. Set dashboard_auth to oidc or proxy (docs/dashboard.md), bind 127.0.0.1, "
            f"or pass --allow-unauthenticated")


def unauthenticated_warning(settings: Settings) -> str | None:
    """The start-up warning of an operator who opted out of sign-in off loopback."""
    if settings.dashboard_auth != "none" or is_loopback(settings.dashboard_host):
        return None
    return (f"warning: the dashboard serves {settings.dashboard_host or 'every address'} without sign-in "
            f"(--allow-unauthenticated): anyone who can reach it sees customer data and can run SQL")
