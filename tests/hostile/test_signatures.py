"""Signature checking under hostile input: any change to what was signed fails, nothing raises."""
from __future__ import annotations

import asyncio
import string
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.auth import HmacAuthenticator, sign
from gateway.callers import Caller, CallerDirectory

KEY_ID, SECRET = "pk_0123456789abcdef", "ps_" + "s" * 43
CALLER = Caller("svc", key_ids=(KEY_ID,))
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]
SKEW = 300
EXAMPLES = settings(max_examples=200, deadline=None)
NONCE = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=16, max_size=64)
PATH = st.text(min_size=1, max_size=80).map(lambda s: "/" + s)
FIELDS = ["method", "path", "timestamp", "nonce", "body", "signature"]


def authenticator() -> HmacAuthenticator:
    return HmacAuthenticator(CallerDirectory({"svc": CALLER}, {KEY_ID: SECRET.encode()}), SKEW)


@st.composite
def signed(draw):
    now = time.time()
    method, path, body, nonce = draw(st.sampled_from(METHODS)), draw(PATH), draw(st.binary(max_size=256)), draw(NONCE)
    timestamp = str(int(now))
    headers = {"X-Port-Key-Id": KEY_ID, "X-Port-Timestamp": timestamp, "X-Port-Nonce": nonce,
               "X-Port-Signature": sign(SECRET, method, path, timestamp, nonce, body)}
    return {"method": method, "path": path, "body": body, "now": now}, headers


def _authenticate(auth: HmacAuthenticator, *request):
    """``authenticate`` is awaitable (a shared nonce store may be across the network)."""
    return asyncio.run(auth.authenticate(*request))


def _verify(auth: HmacAuthenticator, request: dict, headers: dict):
    return _authenticate(auth, request["method"], request["path"], headers, request["body"], request["now"])


@EXAMPLES
@given(signed())
def test_an_intact_signed_request_passes_once(case):
    request, headers = case
    auth = authenticator()
    assert _verify(auth, request, headers).caller is CALLER
    assert _verify(auth, request, headers).error == "replayed_nonce"


@EXAMPLES
@given(signed(), st.sampled_from(FIELDS), st.data())
def test_any_change_to_what_was_signed_fails(case, field, data):
    request, headers = dict(case[0]), dict(case[1])
    if field == "method":
        request["method"] = data.draw(st.sampled_from([m for m in METHODS if m != request["method"]]))
    elif field == "path":
        request["path"] = data.draw(PATH.filter(lambda p: p != request["path"]))
    elif field == "body":
        request["body"] = data.draw(st.binary(max_size=256).filter(lambda b: b != request["body"]))
    elif field == "timestamp":
        shift = data.draw(st.integers(-2 * SKEW, 2 * SKEW).filter(bool))
        headers["X-Port-Timestamp"] = str(int(headers["X-Port-Timestamp"]) + shift)
    elif field == "nonce":
        headers["X-Port-Nonce"] = data.draw(st.text(max_size=80).filter(lambda n: n != headers["X-Port-Nonce"]))
    else:
        headers["X-Port-Signature"] = data.draw(st.text(max_size=80).filter(lambda s: s != headers["X-Port-Signature"]))
    identity = _verify(authenticator(), request, headers)
    assert identity.caller is None
    assert identity.error in {"bad_signature", "stale_timestamp", "missing_credentials"}


HEADER_VALUE = st.one_of(st.text(max_size=100), st.from_regex(r"[0-9]{1,20}", fullmatch=True),
                         st.sampled_from(["²", "١٧٠٠٠٠٠٠٠٠", "１２３", "\ud800", "0" * 64, "-1", " 1", "1e9"]))


@EXAMPLES
@given(method=st.text(max_size=10), path=st.text(max_size=100), body=st.binary(max_size=64),
       key_id=st.one_of(HEADER_VALUE, st.just(KEY_ID)), timestamp=HEADER_VALUE, nonce=st.one_of(HEADER_VALUE, NONCE),
       signature=HEADER_VALUE)
def test_arbitrary_credentials_never_raise(method, path, body, key_id, timestamp, nonce, signature):
    sent = {"X-Port-Key-Id": key_id, "X-Port-Timestamp": timestamp, "X-Port-Nonce": nonce,
            "X-Port-Signature": signature}
    headers = {k: v for k, v in sent.items() if v is not None}
    identity = _authenticate(authenticator(), method, path, headers, body, time.time())
    assert identity.caller is None and identity.error is not None


def test_non_ascii_digits_in_the_timestamp_are_stale_not_a_crash():
    """``"²".isdigit()`` is true but ``int("²")`` raises; other scripts' digits are not Unix time."""
    auth = authenticator()
    for timestamp in ("²", "١٧٠٠٠٠٠٠٠٠", "１７００００００００"):
        headers = {"X-Port-Key-Id": KEY_ID, "X-Port-Timestamp": timestamp, "X-Port-Nonce": "n" * 16,
                   "X-Port-Signature": "0" * 64}
        assert _authenticate(auth, "POST", "/v1/check", headers, b"", time.time()).error == "stale_timestamp"


def test_known_key_ids_compare_signatures_in_constant_time(monkeypatch):
    """The timing-oracle guard as SECURITY.md states it: under a known key id every well-formed
    signature costs one HMAC and one ``hmac.compare_digest`` of the whole expected value, however
    much of it the guess got right. (An unknown key id costs no HMAC at all, on purpose: see
    ``tests/hostile/test_auth_flood.py::test_unknown_key_ids_cost_no_hmac_at_all``.)"""
    import gateway.auth as auth_module

    work = []
    real_sign, real_compare = auth_module.sign, auth_module.hmac.compare_digest
    monkeypatch.setattr(auth_module, "sign", lambda *args: work.append("hmac") or real_sign(*args))
    monkeypatch.setattr(auth_module.hmac, "compare_digest",
                        lambda a, b: work.append(("compare", len(a), len(b))) or real_compare(a, b))
    now = time.time()
    timestamp = str(int(now))
    good = sign(SECRET, "POST", "/v1/check", timestamp, "n" * 16, b"{}")
    flip = {c: "0" if c != "0" else "1" for c in good}
    guesses = {"right": good, "zeros": "0" * 64, "last wrong": good[:-1] + flip[good[-1]],
               "first wrong": flip[good[0]] + good[1:], "not hex": "z" * 64}
    for name, signature in guesses.items():
        headers = {"X-Port-Key-Id": KEY_ID, "X-Port-Timestamp": timestamp, "X-Port-Nonce": "n" * 16,
                   "X-Port-Signature": signature}
        work.clear()
        identity = _authenticate(authenticator(), "POST", "/v1/check", headers, b"{}", now)
        assert identity.error == (None if name == "right" else "bad_signature"), name
        assert work == ["hmac", ("compare", 64, 64)], name
