"""Schemathesis against a real ``portcullis serve`` (durable audit, real sockets), driven by the
gateway's own ``/openapi.json``: positive and negative cases for every operation, each request
HMAC-signed over the exact bytes sent. No answer may be a 5xx, every schema-violating request
must be refused with a 4xx, and every answer must match the document."""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ServerProcess, make_data_dir


def negative_data_refused(ctx, response, case):
    """``negative_data_rejection``, knowing that a batch refuses a malformed check inside it on its
    own: the batch answers 200 and that check's result carries status 400 (README, Decisions)."""
    if case.path == "/v1/check/batch" and response.status_code == 200:
        if any(result.get("status", 200) >= 400 for result in response.json().get("results", [])):
            return None
    return negative_data_rejection(ctx, response, case)


CHECKS = [not_a_server_error, negative_data_refused, status_code_conformance, content_type_conformance,
          response_schema_conformance]


class HmacAuth(requests.auth.AuthBase):
    """Signs the prepared request (SPEC §3) as a calling service would: over the final body bytes
    and the path and query exactly as they go on the request line."""

    def __init__(self, key_id: str, secret: str) -> None:
        self.key_id, self.secret = key_id, secret.encode()

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        body = body.encode() if isinstance(body, str) else body
        timestamp, nonce = str(int(time.time())), secrets.token_urlsafe(18)
        canonical = "\n".join([request.method.upper(), request.path_url, timestamp, nonce,
                               hashlib.sha256(body).hexdigest()]).encode()
        request.headers.update({"X-Port-Key-Id": self.key_id, "X-Port-Timestamp": timestamp, "X-Port-Nonce": nonce,
                                "X-Port-Signature": hmac.new(self.secret, canonical, hashlib.sha256).hexdigest()})
        return request


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A real gateway process; yields (base URL, signed session)."""
    data = make_data_dir(tmp_path_factory.mktemp("fuzz") / "data", environment="prod")
    data.issue(tier="unlimited")
    server = ServerProcess(data.path, env={"PORTCULLIS_LOG_LEVEL": "warning"})
    session = requests.Session()
    session.auth = HmacAuth(data.admin.key_id, data.admin.secret)  # admin: every operation reaches its handler
    yield server.url, session
    session.close()
    assert server.stop(timeout=60) == 0
    log = server.log.read_text()
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture(scope="module")
def api(live):
    base, _ = live
    loaded = schemathesis.openapi.from_url(f"{base}/openapi.json")
    # The signing session sets the four X-Port-* headers itself: schemathesis must not mutate them.
    loaded.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=40,
                                    with_security_parameters=False)
    return loaded


schema = schemathesis.pytest.from_fixture("api")


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_negative_cases_are_4xx(case, live):
    base, session = live
    response = case.call(base_url=base, session=session, timeout=10)
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
    case.validate_response(response, checks=CHECKS)
