"""Behind a load balancer: the client address (audit ``remote_addr``, the failed-auth throttle) comes
from the forwarding header only when the TCP peer is a trusted proxy (SPEC §11), over real HTTP.

The test client connects from 127.0.0.1 (or ::1): trusting it makes the test client a balancer."""
from __future__ import annotations

import logging

import pytest

from gateway.audit import MemorySink
from gateway.config import SettingsError, load_settings
from gateway.http.app import create_app
from tests.http.conftest import Gateway

CHECK = "/v1/check"
BODY = b'{"license_key": "LK-x", "feature": "x"}'
CLIENT_A, CLIENT_B = "203.0.113.7", "198.51.100.9"


@pytest.fixture
def behind(aiohttp_client, data_dir):
    """Start a gateway with these settings (``host``: the address it listens on, so its peers')."""
    async def start(host: str = "127.0.0.1", **settings) -> Gateway:
        sink = MemorySink()
        app = create_app(data_dir.settings.with_(**settings), sink_factory=lambda s, i: sink)
        return Gateway(await aiohttp_client(app, server_kwargs={"host": host}), data_dir, sink)
    return start


async def _forged(gateway: Gateway, headers: dict) -> int:
    """A request under a real key id with a wrong signature: a failed authentication."""
    signed = gateway.data.service.headers("POST", CHECK, BODY)
    sent = {**signed, "X-Port-Signature": "0" * 64, "Content-Type": "application/json", **headers}
    response = await gateway.client.post(CHECK, data=BODY, headers=sent)
    return response.status


async def _signed(gateway: Gateway, headers: dict) -> int:
    sent = {**gateway.data.service.headers("POST", CHECK, BODY), "Content-Type": "application/json", **headers}
    response = await gateway.client.post(CHECK, data=BODY, headers=sent)
    return response.status


async def _remote_addr(gateway: Gateway, headers: dict) -> str:
    """The ``remote_addr`` audited for one request carrying ``headers``."""
    before = len(gateway.records)
    await _signed(gateway, headers)
    (record,) = gateway.records[before:]
    return record.remote_addr


async def test_behind_a_trusted_proxy_the_audit_names_the_client(behind):
    gateway = await behind(trusted_proxies=("127.0.0.1",))
    assert await _remote_addr(gateway, {"X-Forwarded-For": CLIENT_A}) == CLIENT_A
    assert await _remote_addr(gateway, {}) == "127.0.0.1"  # the balancer's own request (no header)
    forwarded = await behind(trusted_proxies=("127.0.0.0/8",), trusted_proxies_header="forwarded")
    assert await _remote_addr(forwarded, {"Forwarded": f'for={CLIENT_A};proto=https;by="[2001:db8::1]"'}) == CLIENT_A
    # The header the operator did not name is the client's own: ignored.
    assert await _remote_addr(forwarded, {"X-Forwarded-For": CLIENT_B}) == "127.0.0.1"
    assert await _remote_addr(gateway, {"Forwarded": f"for={CLIENT_B}"}) == "127.0.0.1"


async def test_one_client_flooding_behind_the_balancer_does_not_lock_out_another(behind, stopped_clock):
    gateway = await behind(trusted_proxies=("127.0.0.1",))
    burst = int(gateway.data.settings.auth_fail_rps)
    statuses = [await _forged(gateway, {"X-Forwarded-For": CLIENT_A}) for _ in range(burst + 5)]
    assert statuses == [401] * burst + [429] * 5
    refused = [r for r in gateway.records if r.http_status == 429]
    assert {(r.remote_addr, r.auth_error) for r in refused} == {(CLIENT_A, "rate_limited")}
    # Another client behind the same balancer is neither refused nor charged for the flood.
    assert await _signed(gateway, {"X-Forwarded-For": CLIENT_B}) == 200
    assert await _forged(gateway, {"X-Forwarded-For": CLIENT_B}) == 401
    # The flooding client cannot get out by changing what it writes left of the balancer's hop.
    assert await _signed(gateway, {"X-Forwarded-For": f"{CLIENT_B}, {CLIENT_A}"}) == 429


@pytest.mark.parametrize("trusted", [(), ("10.0.0.0/8", "::1")], ids=["none trusted", "peer not trusted"])
async def test_a_forwarding_header_from_an_untrusted_peer_is_ignored(behind, stopped_clock, trusted):
    gateway = await behind(trusted_proxies=trusted)
    spoofs = [{"X-Forwarded-For": CLIENT_A}, {"Forwarded": f"for={CLIENT_A}"},
              {"X-Forwarded-For": "10.0.0.1"}, {"X-Real-IP": CLIENT_A}]
    for headers in spoofs:
        assert await _remote_addr(gateway, headers) == "127.0.0.1"
    # A flood with a new spoofed address each time is still one address: throttled.
    burst = int(gateway.data.settings.auth_fail_rps)
    statuses = [await _forged(gateway, {"X-Forwarded-For": f"192.0.2.{n}"}) for n in range(burst + 5)]
    assert statuses == [401] * burst + [429] * 5
    assert {r.remote_addr for r in gateway.records} == {"127.0.0.1"}


@pytest.mark.parametrize("header,expected", [
    # client-written hops left of the first untrusted one, garbage included, are never read
    (f"198.51.100.1, {CLIENT_A}, 10.0.0.5, 10.1.2.3", CLIENT_A),
    (f"not-an-address, {CLIENT_A}, 10.0.0.5", CLIENT_A),
    (f"{CLIENT_A}:4711, 10.0.0.5", CLIENT_A),  # a proxy that appends the client's port
    ("::ffff:10.0.0.7, 10.0.0.5", "10.0.0.7"),  # every hop trusted: the leftmost (IPv4-mapped is IPv4)
    (f"{CLIENT_A},10.0.0.5,  10.0.0.6", CLIENT_A),
])
async def test_a_chain_of_proxies_is_walked_from_the_right(behind, header, expected):
    gateway = await behind(trusted_proxies=("127.0.0.1", "10.0.0.0/8"))
    assert await _remote_addr(gateway, {"X-Forwarded-For": header}) == expected


async def test_a_chain_in_forwarded_headers_is_walked_from_the_right(behind):
    gateway = await behind(trusted_proxies=("127.0.0.1", "10.0.0.0/8"), trusted_proxies_header="forwarded")
    chained = f'for=192.0.2.1, for="{CLIENT_A}:80";proto=http, for=10.0.0.5;by=10.0.0.6'
    assert await _remote_addr(gateway, {"Forwarded": chained}) == CLIENT_A
    # several header lines are one list, in order
    lines = [("Forwarded", "for=192.0.2.1"), ("Forwarded", f'for="{CLIENT_B}"'), ("Forwarded", "For=10.0.0.5")]
    before = len(gateway.records)
    sent = [*gateway.data.service.headers("POST", CHECK, BODY).items(), ("Content-Type", "application/json"), *lines]
    assert (await gateway.client.post(CHECK, data=BODY, headers=sent)).status == 200
    assert gateway.records[before].remote_addr == CLIENT_B


async def test_ipv6_balancers_and_clients(behind):
    gateway = await behind(host="::1", trusted_proxies=("::1", "2001:db8:ffff::/48"))
    assert await _remote_addr(gateway, {"X-Forwarded-For": "2001:db8::7"}) == "2001:db8::7"
    assert await _remote_addr(gateway, {"X-Forwarded-For": "[2001:DB8:0::7]:4711, 2001:db8:ffff::2"}) == "2001:db8::7"
    forwarded = await behind(host="::1", trusted_proxies=("::1",), trusted_proxies_header="forwarded")
    assert await _remote_addr(forwarded, {"Forwarded": 'for="[2001:db8::7]:4711"'}) == "2001:db8::7"
    assert await _remote_addr(forwarded, {"Forwarded": f"for={CLIENT_A}"}) == CLIENT_A
    untrusted = await behind(host="::1", trusted_proxies=("127.0.0.1",))
    assert await _remote_addr(untrusted, {"X-Forwarded-For": "2001:db8::7"}) == "::1"


MALFORMED = [
    ("x-forwarded-for", f"{CLIENT_A}, bogus"),
    ("x-forwarded-for", f"{CLIENT_A},"),
    ("x-forwarded-for", ""),
    ("forwarded", f'for="{CLIENT_A}'),  # unterminated quote: where the elements end is unknown
    ("forwarded", "for=unknown"),  # RFC 7239 allows it, but nobody can be throttled by it
    ("forwarded", "for=_hidden"),
    ("forwarded", "proto=https"),  # no for=
    ("forwarded", f"for={CLIENT_A};for={CLIENT_B}"),
    ("forwarded", f"for {CLIENT_A}"),
]


@pytest.mark.parametrize("header,value", MALFORMED, ids=[v or "empty" for _, v in MALFORMED])
async def test_a_malformed_header_is_never_trusted_and_said_once_a_minute(behind, caplog, header, value):
    gateway = await behind(trusted_proxies=("127.0.0.1",), trusted_proxies_header=header)
    name = {"x-forwarded-for": "X-Forwarded-For", "forwarded": "Forwarded"}[header]
    with caplog.at_level(logging.WARNING, logger="portcullis.http"):
        for _ in range(3):
            assert await _remote_addr(gateway, {name: value}) == "127.0.0.1"
    warnings = [r for r in caplog.records if getattr(r, "event", None) == "forwarded_header_malformed"]
    assert len(warnings) == 1, "one warning a minute, not one per request"
    assert (warnings[0].peer, warnings[0].header) == ("127.0.0.1", name)
    assert value == "" or value not in warnings[0].getMessage() + warnings[0].error  # the client's bytes stay out
    # A well-formed header right after is believed again.
    assert await _remote_addr(gateway, {name: f"for={CLIENT_B}" if header == "forwarded" else CLIENT_B}) == CLIENT_B


async def test_refusals_no_handler_sees_are_audited_with_the_client_address(behind):
    gateway = await behind(trusted_proxies=("127.0.0.1",))
    response = await gateway.client.get("/v1/nothing", headers={"X-Forwarded-For": CLIENT_A})
    assert response.status == 404
    (record,) = await gateway.settled()
    assert (record.endpoint, record.remote_addr) == ("http.route", CLIENT_A)


def test_trusted_proxies_are_read_from_toml_and_the_environment(tmp_path):
    (tmp_path / "portcullis.toml").write_text('trusted_proxies = ["10.0.0.0/8", "2001:db8::1"]\n')
    assert load_settings(tmp_path, env={}).trusted_proxies == ("10.0.0.0/8", "2001:db8::1")
    env = {"PORTCULLIS_TRUSTED_PROXIES": "192.0.2.1, 10.0.0.0/8"}
    assert load_settings(tmp_path, env=env).trusted_proxies == ("192.0.2.1", "10.0.0.0/8")
    assert load_settings(tmp_path, env={"PORTCULLIS_TRUSTED_PROXIES": ""}).trusted_proxies == ()


@pytest.mark.parametrize("value,error", [("10.0.0.1/8", "host bits set"), ("balancer.internal", "does not appear"),
                                         ("10.0.0.0/33", "10.0.0.0/33")])
def test_a_trusted_proxy_that_is_not_an_address_or_network_is_refused(tmp_path, value, error):
    with pytest.raises(SettingsError, match="trusted_proxies") as refused:
        load_settings(tmp_path, env={"PORTCULLIS_TRUSTED_PROXIES": value})
    assert error in str(refused.value)
    with pytest.raises(SettingsError, match="trusted_proxies_header"):
        load_settings(tmp_path, env={"PORTCULLIS_TRUSTED_PROXIES_HEADER": "x-real-ip"})

