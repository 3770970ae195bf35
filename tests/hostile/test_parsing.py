"""Request parsing under hostile input: arbitrary JSON gives a check or InvalidRequest, nothing
else, and whatever a refusal records fits the audit trail."""
from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.audit.schema import AUDIT_SCHEMA
from gateway.audit.records import RecordEncoder
from gateway.checks import MAX_BATCH, CheckBody, InvalidRequest, is_text, lenient_fields, parse_batch, parse_check
from gateway.exchange import Exchange
from gateway.port import read_check

EXAMPLES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FIELDS = ["license_key", "user_id", "feature", "product", "environment", "quantity", "request_id"]
# Lone surrogates are valid JSON (``"\ud800"``) and invalid Unicode: the classic crash of text
# that is later encoded to UTF-8 (hashing, logging, Parquet).
NASTY = st.sampled_from(["\ud800", "\udfff", "a\udc80b", "\x00", "é" * 129, "x" * 257, "", " ", "LK-\ud83d",
                         "reports.*", "../../etc", "1e309", "\u202e", "a\nb"])
TEXT = st.one_of(st.text(st.characters(exclude_categories=()), max_size=40), NASTY)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-2, 2 ** 40), st.floats(), TEXT)
JSON = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                    max_leaves=12)
NEAR_CHECK = st.builds(lambda known, extra: {**known, **extra},
                       st.fixed_dictionaries({}, optional={f: st.one_of(SCALAR, JSON) for f in FIELDS}),
                       st.dictionaries(TEXT, SCALAR, max_size=2) | st.just({}))
ANY_DOC = st.one_of(JSON, NEAR_CHECK)
ENCODER = RecordEncoder(AUDIT_SCHEMA)


def exchange() -> Exchange:
    return Exchange(decision_id="d", request_id="d", now=datetime.now(UTC), received_ns=0, instance="test",
                    environment="prod", remote_addr="127.0.0.1", endpoint="check", policy_version="p")


@EXAMPLES
@given(ANY_DOC)
def test_parse_check_gives_a_check_or_invalid_request(doc):
    try:
        body = parse_check(doc)
    except InvalidRequest as exc:
        assert is_text(str(exc)) and len(str(exc)) < 300
        return
    assert isinstance(body, CheckBody)
    assert 1 <= len(body.license_key) <= 256 and is_text(body.license_key)
    assert all(v is None or (isinstance(v, str) and v.isascii()) for v in
               (body.feature, body.user_id, body.product, body.environment, body.request_id))
    assert type(body.quantity) is int and 0 <= body.quantity <= 1_000_000_000


@EXAMPLES
@given(ANY_DOC)
def test_parse_batch_gives_a_list_or_invalid_request(doc):
    try:
        checks = parse_batch(doc)
    except InvalidRequest as exc:
        assert is_text(str(exc))
        return
    assert isinstance(checks, list) and 1 <= len(checks) <= MAX_BATCH


@EXAMPLES
@given(ANY_DOC)
def test_what_a_refusal_records_fits_the_audit_trail(doc):
    ex = exchange()
    for value in lenient_fields(doc).values():
        assert is_text(value) and len(value) <= 128
    if read_check(ex, doc) is None:
        assert ex.http_status == 400
        ENCODER.arrow([ex.record()])  # raise InvalidRecord if the trail could not take it
        ENCODER.json_lines([ex.record()])


@EXAMPLES
@given(ANY_DOC)
@example({"license_key": "k", "feature": "f", "quantity": 2})  # well-formed: rare among random documents
def test_every_document_survives_the_wire(doc):
    """What the HTTP layer sees (the JSON text of the document, parsed back) is decided as the
    document itself is: the same check, or the same refusal, whose record fits the audit trail."""
    raw = json.dumps(doc).encode()  # Python's json writes (and reads back) NaN and lone surrogates too
    direct, wired = exchange(), exchange()
    body = read_check(direct, doc)
    assert read_check(wired, json.loads(raw)) == body
    if body is not None:  # a check to decide (later, by the port): the same fields asked
        asked = ("feature", "user_id", "product", "quantity", "request_id")
        assert [getattr(wired, f) for f in asked] == [getattr(direct, f) for f in asked]
        return
    assert wired.record()._replace(ts=0) == direct.record()._replace(ts=0)
    ENCODER.arrow([wired.record()])  # raise InvalidRecord if the trail could not take it
    ENCODER.json_lines([wired.record()])


# -- the same through the HTTP gateway, whose sink refuses what the durable trail refuses ------

@pytest.mark.parametrize("raw", [
    rb'{"license_key": "x", "feature": "\ud800"}',
    rb'{"license_key": "\ud800", "feature": "f"}',
    rb'{"license_key": "x", "feature": "f", "\udfff": 1}',
    rb'{"license_key": "x", "feature": "f", "user_id": "\udc80"}',
    rb'{"checks": [{"license_key": "\ud800", "feature": "f"}]}',
])
async def test_lone_surrogates_are_400_and_audited(gateway, raw):
    path = "/v1/check/batch" if b"checks" in raw else "/v1/check"
    status, body = await gateway.post(path, raw=raw)
    result = body["results"][0] if "results" in body else body
    assert (result["reason"], result.get("status", status)) == ("INVALID_REQUEST", 400)
    assert len(gateway.records) == 1 and gateway.records[0].http_status in (200, 400)


@pytest.mark.parametrize("request_id", [b"a\xffb", b"\xed\xa0\x80", b"\xc3\xa9t\xc3\xa9"])
async def test_any_x_request_id_bytes_are_audited(gateway, request_id):
    body = b'{"license_key": "LK-x", "feature": "f"}'
    head = [b"POST /v1/check HTTP/1.1", b"Host: x", b"Connection: close", b"Content-Type: application/json",
            b"Content-Length: %d" % len(body), b"X-Request-Id: " + request_id]
    head += [f"{k}: {v}".encode() for k, v in gateway.data.service.headers("POST", "/v1/check", body).items()]
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.client.server.port)
    writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert len(gateway.records) == 1 and gateway.records[0].reason == "KEY_NOT_FOUND"
