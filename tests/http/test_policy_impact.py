"""POST /v1/admin/policy/impact: the impact report for tooling, admin only, audited."""
from __future__ import annotations

from tests.impact_history import EXPECTED, PROPOSED, changes_by_customer, LOOK_BACK_DAYS, plant

PATH = "/v1/admin/policy/impact"


async def test_impact_over_http_lists_the_changes_and_is_audited(gateway):
    plant(gateway.data)
    body = PROPOSED.encode()
    status, answer = await gateway.post(PATH + f"?days={LOOK_BACK_DAYS}", raw=body, content_type="application/toml",
                                        creds=gateway.data.admin)
    assert status == 200 and answer["decision"] == "allow", answer
    report = answer["impact"]
    assert changes_by_customer(report) == {c: sorted(pairs) for c, pairs in EXPECTED.items()}
    assert report["self_check"]["reproduced"] == report["self_check"]["replayed"]
    assert report["proposed_source"] == "request body"
    assert f"{report['changed']} of {report['replayed']} replayed decisions would change" in answer["detail"]
    [record] = gateway.records
    assert (record.endpoint, record.caller_id, record.http_status) == ("admin.policy_impact", "admin", 200)


async def test_impact_refusals_are_specific_and_audited(gateway):
    bad = PROPOSED.replace("seats = 3", "seats = 0").encode()
    status, answer = await gateway.post(PATH, raw=bad, content_type="application/toml", creds=gateway.data.admin)
    assert (status, answer["reason"]) == (400, "INVALID_REQUEST")
    assert answer["detail"] == "request body: tier 'basic'.seats: must be >= 1, got 0"
    status, answer = await gateway.post(PATH + "?days=0", raw=PROPOSED.encode(), content_type="application/toml",
                                        creds=gateway.data.admin)
    assert (status, answer["reason"]) == (400, "INVALID_REQUEST") and "days" in answer["detail"]
    status, answer = await gateway.post(PATH, raw=PROPOSED.encode(), content_type="application/toml")
    assert (status, answer["reason"]) == (403, "CALLER_NOT_AUTHORIZED")  # not an admin caller
    assert [(r.endpoint, r.http_status) for r in gateway.records] == [("admin.policy_impact", 400)] * 2 + [
        ("admin.policy_impact", 403)]
