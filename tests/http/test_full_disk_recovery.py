"""A full disk under the whole trail, reached over real HTTP: a segment whose conversion to
Parquet failed while the disk was full reaches Parquet once space returns, by a graceful stop at
the latest, without a restart, and leaves no temp file behind."""
from __future__ import annotations

from tests.conftest import trail_ids, wait_until
from tests.http.test_fail_closed import fill_until_refused, is_ready, trail_on_small_disk  # noqa: F401 (a fixture)


async def test_answered_decisions_reach_parquet_after_a_full_disk_without_a_restart(durable_gateway,
                                                                                   trail_on_small_disk):
    gateway = await durable_gateway()
    issued = gateway.issue(tier="unlimited")
    answered = []
    for i in range(60):  # one open segment: its Parquet file needs more than the disk will have
        status, body = await gateway.check(license_key=issued.key, feature=f"before-{i}")
        answered.append(body["decision_id"])
    ballast, (status, body) = await fill_until_refused(gateway, issued.key, trail_on_small_disk, answered)
    assert (status, body["reason"]) == (503, "AUDIT_UNAVAILABLE")
    await wait_until(lambda: gateway.sink.conversion_failures >= 1, what="the conversion to fail on the full disk")

    ballast.unlink()
    await wait_until(lambda: is_ready(gateway), what="/readyz to recover once the disk has room")
    status, body = await gateway.check(license_key=issued.key, feature="after")
    assert (status, body["reason"]) == (200, "VALID")
    answered.append(body["decision_id"])
    await gateway.client.close()  # a graceful stop
    assert sorted(trail_ids(gateway.data.settings.audit_dir)) == sorted(answered)
    assert [*trail_on_small_disk.rglob("*.seg"), *trail_on_small_disk.rglob("*.tmp")] == []
