"""The policy reload (admin API) also picks up a caller change, at once: the caller removed is
refused by the next request, without waiting for the workers' poll of the callers' files."""
from __future__ import annotations

import pytest

from gateway.callers import remove_caller
from gateway.http import upkeep


@pytest.fixture
def no_polling(monkeypatch):
    """No upkeep round within the test: only the reload can pick the change up."""
    monkeypatch.setattr(upkeep, "INTERVAL_S", 3600.0)


async def test_the_policy_reload_picks_up_a_caller_change_at_once(no_polling, gateway):
    issued = gateway.issue(tier="unlimited")
    settings = gateway.data.settings
    remove_caller(settings.callers_path, settings.keys_dir, "service")
    status, _ = await gateway.check(license_key=issued.key, feature="x")
    assert status == 200, "nothing else reloads the callers within this test"
    status, body = await gateway.post("/v1/admin/policy/reload", {}, creds=gateway.data.admin)
    assert status == 200
    status, body = await gateway.check(license_key=issued.key, feature="x")
    assert (status, body["reason"]) == (401, "UNAUTHENTICATED")
    assert [(r.endpoint, r.decision, r.auth_error) for r in gateway.records] == [
        ("check", "allow", None), ("callers.reload", "allow", None), ("admin.policy_reload", "allow", None),
        ("check", "deny", "unknown_key_id")]
