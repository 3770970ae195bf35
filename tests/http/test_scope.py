"""Product scope over real HTTP: a caller's scope is checked against the license's own product.

The ``narrow`` caller may ask about product ``suite`` only. Naming ``suite`` in the body must not
let it read a license of another product: the answer is 403 with nothing about that license,
and the audit record names the license for analysts.
"""
from __future__ import annotations

CHECK = {"feature": "view", "user_id": "u1", "environment": "prod"}


def _tells_nothing(body: dict, issued) -> None:
    assert (body["decision"], body["reason"], body["license"]) == ("deny", "CALLER_NOT_AUTHORIZED", None)
    text = str(body)
    for secret in (issued.license.license_id, "globex", "other-product", "unlimited"):
        assert secret not in text


def _names_the_license(record, issued, endpoint: str) -> None:
    assert (record.endpoint, record.http_status, record.reason) == (endpoint, 403, "CALLER_NOT_AUTHORIZED")
    assert (record.license_id, record.product, record.caller_id) == (issued.license.license_id, "other-product",
                                                                     "narrow")


async def test_naming_an_allowed_product_does_not_open_another_products_license(gateway):
    issued = gateway.issue(product="other-product", customer="globex", tier="unlimited")
    for named in ({"product": "suite"}, {}):
        status, body = await gateway.post("/v1/check", {"license_key": issued.key, **CHECK, **named},
                                          creds=gateway.data.narrow)
        assert status == 403
        _tells_nothing(body, issued)
        _names_the_license(gateway.records[-1], issued, "check")


async def test_a_batch_item_about_another_product_is_refused_alone(gateway):
    own = gateway.issue(product="suite", tier="basic")
    other = gateway.issue(product="other-product", customer="globex", tier="unlimited")
    checks = [{"license_key": other.key, **CHECK, "product": "suite"}, {"license_key": own.key, **CHECK}]
    status, body = await gateway.post("/v1/check/batch", {"checks": checks}, creds=gateway.data.narrow)
    assert status == 200
    refused, allowed = body["results"]
    assert refused["status"] == 403
    _tells_nothing(refused, other)
    assert (allowed["status"], allowed["reason"]) == (200, "VALID")
    _names_the_license(gateway.records[0], other, "batch")
    assert gateway.records[1].license_id == own.license.license_id


async def test_reading_a_license_of_another_product_is_refused_and_names_it_only_in_the_trail(gateway):
    other = gateway.issue(product="other-product", customer="globex", tier="unlimited")
    path = f"/v1/licenses/{other.license.license_id}"
    status, body = await gateway.get(path, creds=gateway.data.narrow)
    assert status == 403 and "license_state" not in body
    assert (body["decision"], body["reason"], body["license"]) == ("deny", "CALLER_NOT_AUTHORIZED", None)
    assert not {"globex", "other-product", "unlimited"} & set(str(body).replace("'", " ").split())
    _names_the_license(gateway.records[-1], other, "license.get")
    own = gateway.issue(product="suite")
    status, body = await gateway.get(f"/v1/licenses/{own.license.license_id}", creds=gateway.data.narrow)
    assert status == 200 and body["license_state"]["product"] == "suite"
