"""``POST /v1/admin/licenses``: sealed bundles imported over the admin API, idempotently and audited."""
from __future__ import annotations

import base64
import threading

import pyarrow.parquet as pq
import pytest

from gateway import admin, bundle, keyfiles
from gateway.bundle import BEGIN, END
from gateway.registry.sqlite import SqliteStore
from gateway.snapshot import licenses_path
from gateway.types import Status
from tests.conftest import make_data_dir

IMPORT = "/v1/admin/licenses"


@pytest.fixture
def issuer(tmp_path):
    """Another gateway (its own keys and registry) that issues licenses."""
    return make_data_dir(tmp_path / "issuer", environment="prod")


def sealed_for(gateway, issuer) -> tuple[admin.Issued, str]:
    """A license issued on ``issuer`` and sealed to the gateway under test, whose admin trusts it."""
    issued = issuer.issue(tier="unlimited")
    admin.trust_issuer(gateway.data.settings, _issuer_public(issuer))
    return issued, issuer.seal(issued.license, _recipient_public(gateway.data))


def _issuer_public(data) -> str:
    return bundle.public_key_text(keyfiles.issuer_key(data.settings.keys_dir).public_key())


def _recipient_public(data) -> str:
    return bundle.public_key_text(keyfiles.recipient_key(data.settings.keys_dir).public_key())


def tampered(text: str) -> str:
    """Flip one bit in the middle of the sealed bytes, keeping the armor intact."""
    body = "".join(line for line in text.splitlines() if line and not line.startswith("-----"))
    raw = bytearray(base64.b64decode(body))
    raw[len(raw) // 2] ^= 0x01
    return f"{BEGIN}\n{base64.b64encode(bytes(raw)).decode()}\n{END}\n"


async def _import(gateway, text: str, *, as_json: bool = False, creds=None):
    if as_json:
        return await gateway.post(IMPORT, {"bundle": text}, creds=creds or gateway.data.admin)
    return await gateway.post(IMPORT, raw=text.encode(), content_type="text/plain", creds=creds or gateway.data.admin)


async def test_intact_bundle_imports_once_then_is_up_to_date(gateway, issuer):
    issued, text = sealed_for(gateway, issuer)
    status, body = await _import(gateway, text)
    assert (status, body["decision"], body["detail"], body["changed"]) == (200, "allow", "license imported", True)
    assert body["license_state"]["id"] == issued.license.license_id
    status, body = await _import(gateway, text, as_json=True)
    assert (status, body["detail"], body["changed"]) == (200, "license already up to date", False)
    # The running gateway decides on it at once: the index was refreshed by the import.
    status, body = await gateway.check(license_key=issued.key, feature="anything")
    assert (status, body["reason"]) == (200, "VALID")
    records = gateway.records
    assert [r.endpoint for r in records] == ["admin.import", "admin.import", "check"]
    assert records[0].license_id == issued.license.license_id and records[0].caller_id == "admin"
    assert issued.key not in str(records) and text not in str(records)


async def test_import_republishes_snapshots_off_the_event_loop(gateway, issuer, monkeypatch):
    issued, text = sealed_for(gateway, issuer)
    threads = []
    real = admin.publish_snapshots

    def publish(*args, **kwargs):
        threads.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(admin, "publish_snapshots", publish)
    assert (await _import(gateway, text))[0] == 200
    assert threads and threads[0] != threading.get_ident()
    ids = pq.read_table(licenses_path(gateway.data.path)).column("license_id").to_pylist()
    assert issued.license.license_id in ids
    await _import(gateway, text)
    assert len(threads) == 1  # nothing changed, nothing republished


async def test_tampered_bundle_is_one_generic_400_and_audited(gateway, issuer):
    issued, text = sealed_for(gateway, issuer)
    for bad in (tampered(text), text.replace(BEGIN, ""), "not a bundle", ""):
        status, body = await _import(gateway, bad)
        assert (status, body["decision"], body["reason"]) == (400, "deny", "INVALID_REQUEST")
        assert body["detail"] == "invalid license bundle"
        record = gateway.records[-1]
        assert (record.endpoint, record.http_status, record.error) == \
            ("admin.import", 400, "invalid license bundle")
    store = SqliteStore(gateway.data.settings.db_path)
    try:
        assert store.get(issued.license.license_id) is None
    finally:
        store.close()


async def test_bundle_sealed_for_another_gateway_is_refused(gateway, issuer, tmp_path):
    elsewhere = make_data_dir(tmp_path / "elsewhere")
    issued = issuer.issue(tier="unlimited")
    admin.trust_issuer(gateway.data.settings, _issuer_public(issuer))
    text = issuer.seal(issued.license, _recipient_public(elsewhere))
    status, body = await _import(gateway, text)
    assert (status, body["detail"]) == (400, "invalid license bundle")


async def test_bundle_from_an_untrusted_issuer_is_refused(gateway, issuer):
    issued = issuer.issue(tier="unlimited")
    text = issuer.seal(issued.license, _recipient_public(gateway.data))
    status, body = await _import(gateway, text)
    assert (status, body["detail"]) == (400, "invalid license bundle")
    admin.trust_issuer(gateway.data.settings, _issuer_public(issuer))
    assert (await _import(gateway, text))[0] == 200


@pytest.mark.parametrize("raw,content_type,status", [
    (b'{"bundle": 5}', "application/json", 400),
    (b'{"bundle": "x", "more": 1}', "application/json", 400),
    (b"[1]", "application/json", 400),
    (b"{nope", "application/json", 400),
    (b"\xff\xfe", "text/plain", 400),
    (b"x", "application/xml", 415),
])
async def test_malformed_import_bodies(gateway, raw, content_type, status):
    got, body = await gateway.post(IMPORT, raw=raw, content_type=content_type, creds=gateway.data.admin)
    assert (got, body["reason"]) == (status, "INVALID_REQUEST")
    assert gateway.records[-1].endpoint == "admin.import"


async def test_import_needs_an_authenticated_admin(gateway, issuer):
    _, text = sealed_for(gateway, issuer)
    status, body = await _import(gateway, text, creds=gateway.data.service)
    assert (status, body["reason"]) == (403, "CALLER_NOT_AUTHORIZED")
    response = await gateway.client.post(IMPORT, data=text.encode(), headers={"Content-Type": "text/plain"})
    assert response.status == 401
    assert [(r.endpoint, r.http_status) for r in gateway.records] == [("admin.import", 403),
                                                                            ("admin.import", 401)]


async def test_an_older_bundle_is_a_409_with_its_reason_and_audited(gateway, issuer):
    issued, first = sealed_for(gateway, issuer)
    with issuer.store() as store:
        admin.set_status(store, issued.license.license_id, Status.REVOKED)
        revoked = store.get(issued.license.license_id)
    revocation = issuer.seal(revoked, _recipient_public(gateway.data))
    assert (await _import(gateway, first))[0] == 200
    assert (await _import(gateway, revocation))[0] == 200
    status, body = await _import(gateway, first)
    assert (status, body["decision"], body["reason"]) == (409, "deny", "INVALID_REQUEST")
    assert "not newer" in body["detail"] and issued.license.license_id in body["detail"]
    record = gateway.records[-1]
    assert (record.endpoint, record.http_status, record.license_id) == ("admin.import", 409, issued.license.license_id)
    assert "not newer" in record.error
    status, body = await gateway.check(license_key=issued.key, feature="view", user_id="u1")
    assert body["reason"] == "LICENSE_REVOKED"
