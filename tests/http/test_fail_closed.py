"""Faults fail closed: no trail means no decision (503), and a bug is an audited 500 deny on
every audited endpoint, never an unrecorded answer. The trail is the production one, on a real
filesystem that really fills up, reached over real HTTP."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import fill, trail_ids, wait_until
from tests.http.conftest import Gateway


@pytest.fixture
def trail_on_small_disk(data_dir, small_disk: Path) -> Path:
    """The gateway's audit trail (spool and Parquet) on a real 1 MiB filesystem, to be filled up
    for real. Both: with only the spool there, converting a segment would free the space."""
    settings = data_dir.settings
    if settings.audit_dir.is_dir():  # empty yet: the gateway makes it where it is missing
        settings.audit_dir.rmdir()
    for directory in (settings.spool_dir, settings.audit_dir):
        (small_disk / directory.name).mkdir()
        directory.symlink_to(small_disk / directory.name, target_is_directory=True)
    return small_disk


async def ready(gateway: Gateway) -> tuple[int, dict]:
    response = await gateway.client.get("/readyz")
    return response.status, await response.json()


async def is_ready(gateway: Gateway) -> bool:
    return (await ready(gateway))[0] == 200


async def fill_until_refused(gateway: Gateway, key: str, disk: Path, answered: list[str]) -> tuple[Path, tuple]:
    """Fill the disk, then check until the gateway refuses, adding what it answered to ``answered``;
    returns the ballast file and the refusal (status, body)."""
    ballast = fill(disk)
    for _ in range(100):  # the segment's last free page may take a few more records
        status, body = await gateway.check(license_key=key, feature="anything")
        if status != 200:
            break
        answered.append(body["decision_id"])
    return ballast, (status, body)


async def lost_and_written(gateway: Gateway, condition) -> bool:
    """``condition(lost, written)`` over the audit records /metrics reports lost and written."""
    m = await gateway.metrics()
    return condition(m[("portcullis_audit_lost_records_total", ())], m[("portcullis_audit_records_total", ())])


async def test_a_full_disk_is_a_503_deny_and_not_ready_until_freed(durable_gateway, trail_on_small_disk):
    gateway = await durable_gateway()
    issued = gateway.issue(tier="unlimited")
    answered = [(await gateway.check(license_key=issued.key, feature="before"))[1]["decision_id"]]
    ballast, (status, body) = await fill_until_refused(gateway, issued.key, trail_on_small_disk, answered)
    assert (status, body["decision"], body["reason"]) == (503, "deny", "AUDIT_UNAVAILABLE")
    assert "No space" not in body["detail"]
    refused = [body["decision_id"]]
    status, body = await gateway.post("/v1/check/batch", {"checks": [{"license_key": issued.key, "feature": "x"}] * 3})
    assert (status, body["reason"]) == (503, "AUDIT_UNAVAILABLE")
    status, body = await ready(gateway)
    assert (status, body["checks"]["audit"]) == (503, False)
    assert gateway.sink.failures >= 1

    ballast.unlink()
    await wait_until(lambda: is_ready(gateway), what="/readyz to recover once the disk has room")
    status, body = await gateway.check(license_key=issued.key, feature="after")
    assert (status, body["reason"]) == (200, "VALID")
    answered.append(body["decision_id"])
    await gateway.client.close()  # the sink writes out and converts everything it took
    trail = trail_ids(gateway.data.settings.audit_dir)
    assert sorted(trail) == sorted(answered) and not set(refused) & set(trail)


async def test_on_failure_allow_answers_on_a_full_disk_and_counts_what_it_lost(durable_gateway, trail_on_small_disk):
    gateway = await durable_gateway(audit_on_failure="allow")
    issued = gateway.issue(tier="unlimited")
    assert (await gateway.check(license_key=issued.key, feature="before"))[1]["reason"] == "VALID"
    ballast = fill(trail_on_small_disk)
    answers = [await gateway.check(license_key=issued.key, feature="anything") for _ in range(20)]
    assert {(status, body["reason"]) for status, body in answers} == {(200, "VALID")}
    # Each answer's record was written or counted lost, and (the disk being full) some were lost.
    await wait_until(lambda: lost_and_written(gateway, lambda lost, written: lost >= 1 and lost + written == 21),
                     what="every answer to be counted in /metrics, written or lost")
    assert not gateway.sink.healthy()
    status, body = await ready(gateway)
    assert (status, body["checks"]["audit"]) == (503, False)  # answering, and saying the trail is down

    ballast.unlink()
    await wait_until(lambda: is_ready(gateway), what="/readyz to recover once the disk has room")
    lost = gateway.sink.lost_records
    status, body = await gateway.check(license_key=issued.key, feature="after")
    assert (status, body["reason"]) == (200, "VALID")
    await wait_until(lambda: lost_and_written(gateway, lambda now_lost, written: (now_lost, now_lost + written)
                                              == (lost, 22)), what="the answer after recovery to be written")
    await gateway.client.close()
    assert body["decision_id"] in trail_ids(gateway.data.settings.audit_dir)


@pytest.mark.parametrize("endpoint", ["license.get", "admin.revoke", "admin.policy_reload"])
async def test_a_bug_in_any_audited_handler_is_an_audited_500(gateway, monkeypatch, endpoint):
    def broken(*args, **kwargs):
        raise RuntimeError("database on fire at /secret/path")

    if endpoint == "license.get":
        monkeypatch.setattr(gateway.port.index, "by_id", type("Broken", (), {"get": broken})())
        status, body = await gateway.get("/v1/licenses/lic_x", creds=gateway.data.admin)
    elif endpoint == "admin.revoke":
        monkeypatch.setattr(gateway.port.store, "set_status", broken)
        status, body = await gateway.post("/v1/admin/licenses/lic_x/revoke", {}, creds=gateway.data.admin)
    else:
        from gateway.http.keys import GATE
        monkeypatch.setattr(gateway.client.server.app[GATE].port, "reload_policy", broken)
        status, body = await gateway.post("/v1/admin/policy/reload", {}, creds=gateway.data.admin)
    assert (status, body["decision"], body["reason"]) == (500, "deny", "INTERNAL_ERROR")
    assert "fire" not in str(body)
    assert [(r.endpoint, r.http_status) for r in gateway.records] == [(endpoint, 500)]
