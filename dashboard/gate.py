"""The dashboard server's outer door: an ASGI middleware in front of every HTTP request and
WebSocket of Streamlit's server (``st.App(middleware=...)``), before any of Streamlit's routes.

A request whose ``Host`` is not one the dashboard answers to (``dashboard.access.allowed_hosts``)
gets ``421 Misdirected Request`` and nothing else: no page, no script, no WebSocket (refused
before the handshake), no sign-in route. That defeats DNS rebinding, where a page of another
site, its name re-pointed at 127.0.0.1, would otherwise drive the dashboard with the visitor's
browser. Doing it here rather than in the app script covers every route (static files, media and
downloads, the sign-in callback), not only what the script draws. Streamlit's own
``server.allowedHosts`` checks only the WebSocket and ignores the port.

In proxy mode a connection from anywhere but the trusted proxy gets ``403``: the user header is
believed only because nobody else can send it.
"""
from __future__ import annotations

import ipaddress
import logging
from typing import Any, Awaitable, Callable, Iterable

log = logging.getLogger("portcullis.dashboard")

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Gate:
    """Refuse requests with a foreign ``Host`` (and, given ``proxies``, from a foreign peer)."""

    def __init__(self, app: ASGIApp, hosts: Iterable[str], proxies: Iterable[Network] | None = None) -> None:
        self.app, self.hosts = app, frozenset(hosts)
        self.proxies = None if proxies is None else tuple(proxies)

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            refusal = self.refusal(scope)
            if refusal is not None:
                status, reason = refusal
                log.warning("dashboard: refused a %s request: %s", scope["type"], reason)
                await _refuse(scope, send, status, reason)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        hosts = [value for name, value in scope.get("headers", ()) if name == b"host"]
        host = hosts[0].decode("latin-1").lower() if len(hosts) == 1 else None
        if host not in self.hosts:
            shown = "none" if not hosts else "several" if len(hosts) > 1 else ascii(host[:100])
            return 421, f"Host {shown} is not a name this dashboard answers to"
        if self.proxies is not None and not _from(scope.get("client"), self.proxies):
            return 403, "proxy mode: only the trusted proxy may connect"
        return None


def _from(client: tuple[str, int] | None, networks: tuple[Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(client[0]) if client else None
    except ValueError:
        return False
    return address is not None and any(address in network for network in networks)


async def _refuse(scope: Scope, send, status: int, reason: str) -> None:
    if scope["type"] == "websocket":
        # Closing before accepting refuses the handshake: the server answers 403 and no frame is sent.
        await send({"type": "websocket.close", "code": 1008})
        return
    body = f"{reason}\n".encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})
