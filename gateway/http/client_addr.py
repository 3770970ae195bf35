"""The client's address: the TCP peer, or what a trusted proxy in front says it is (SPEC §11).

Behind a load balancer every connection comes from the balancer, so the peer address would name
it in every audit record and one client flooding bad signatures would get the balancer, and so
every client behind it, throttled. A forwarding header fixes that, but anybody can send one: it
is read only when the peer is one of ``trusted_proxies``, and then walked from the right (the
hop the nearest proxy appended) past every trusted proxy to the first address that is not one.
Everything to the left of that hop was written by the client and is never looked at.

One header is read, the one ``trusted_proxies_header`` names (``X-Forwarded-For`` or RFC 7239
``Forwarded``): a proxy that writes one passes the other through from the client unchanged, so
reading both would let a client choose. A header that cannot be walked (a hop that is not an
address, an unterminated quote) is never trusted: the peer address is used and a warning logged,
at most once a minute. The PROXY protocol is not supported.
"""
from __future__ import annotations

import ipaddress
import logging
import re
import time
from collections.abc import Iterable

from aiohttp import web

log = logging.getLogger("portcullis.http")
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
WARN_EVERY_S = 60.0
HEADERS = {"x-forwarded-for": "X-Forwarded-For", "forwarded": "Forwarded"}
_PAIR = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)=("(?:[^"\\]|\\.)*"|[!#$%&\'*+.^_`|~0-9A-Za-z-]*)\s*')
_PORT = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<v4>[0-9.]+))(?::[0-9]{1,5})?$")


class Malformed(ValueError):
    """The forwarding header cannot be walked; the message says where, never what it holds."""


class ClientAddress:
    """``client_address(request)`` → the address to audit and to throttle failed authentications by."""

    def __init__(self, trusted: Iterable[str] = (), header: str = "x-forwarded-for") -> None:
        self.trusted: tuple[Network, ...] = tuple(ipaddress.ip_network(item) for item in trusted)
        self.header = HEADERS[header]
        forwarded = header == "forwarded"
        self._split, self._hop = (_quoted_split, _forwarded_for) if forwarded else (_comma_split, _plain)
        self._warned_at = -WARN_EVERY_S
        self._unwarned = 0

    def __call__(self, request: web.BaseRequest) -> str:
        peer = request.remote or ""
        if not self.trusted or not self._is_trusted(_address(peer)):
            return peer  # no proxy trusted, or not from one: no header is believed
        values = request.headers.getall(self.header, ())
        if not values:
            return peer  # the proxy itself (a health check), or one that does not forward
        try:
            return self._walk(self._split(",".join(values)))
        except Malformed as exc:
            self._warn(peer, str(exc))
            return peer

    def _walk(self, elements: list[str]) -> str:
        client: Address | None = None
        for position, element in enumerate(reversed(elements), 1):
            client = _address(self._hop(element))
            if client is None:
                raise Malformed(f"hop {position} from the right is not an address")
            if not self._is_trusted(client):
                break  # the first hop no trusted proxy vouches for: the client
        # Every hop trusted: the request started at the leftmost one (a proxy calling itself).
        return str(client)

    def _is_trusted(self, address: Address | None) -> bool:
        return address is not None and any(address in network for network in self.trusted)

    def _warn(self, peer: str, error: str) -> None:
        now = time.monotonic()
        if now - self._warned_at < WARN_EVERY_S:
            self._unwarned += 1
            return
        log.warning("malformed %s header from trusted proxy %s: using the peer address", self.header, peer,
                    extra={"event": "forwarded_header_malformed", "header": self.header, "peer": peer,
                           "error": error, "unreported": self._unwarned})
        self._warned_at, self._unwarned = now, 0


def _comma_split(value: str) -> list[str]:
    return [element.strip() for element in value.split(",")]


def _quoted_split(value: str) -> list[str]:
    """The comma-separated elements of a ``Forwarded`` header, commas inside quoted strings kept."""
    elements, start, quoted, escaped = [], 0, False, False
    for i, char in enumerate(value):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            elements.append(value[start:i])
            start = i + 1
    if quoted:
        raise Malformed("unterminated quoted string")
    elements.append(value[start:])
    return [element.strip() for element in elements]


def _plain(element: str) -> str:
    return element


def _forwarded_for(element: str) -> str:
    """The ``for=`` of one RFC 7239 element (``name=value`` pairs separated by ``;``), unquoted."""
    found, position = None, 0
    while True:
        match = _PAIR.match(element, position)
        if match is None:
            raise Malformed("an element is not a list of name=value pairs")
        if match[1].lower() == "for":
            if found is not None:
                raise Malformed("an element has two for=")
            value = match[2]
            found = re.sub(r"\\(.)", r"\1", value[1:-1]) if value.startswith('"') else value
        position = match.end()
        if position == len(element):
            break
        if element[position] != ";":
            raise Malformed("an element is not a list of name=value pairs")
        position += 1
    if found is None:
        raise Malformed("an element has no for=")
    return found


def _address(text: str) -> Address | None:
    """An address as a peer or a hop gives it (``[v6]:port`` and ``v4:port`` too), IPv4-mapped
    IPv6 as IPv4 (a dual-stack socket's peers), or None when it is not one."""
    match = _PORT.fullmatch(text)
    if match is not None:
        text = match["v6"] or match["v4"]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
