"""A single worker's nonce journal that cannot be written fails closed: the request is denied
(audited), never allowed with a nonce a restart would forget; answers resume once it can."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import fill


@pytest.fixture
def journal_on_small_disk(data_dir, small_disk: Path) -> Path:
    data_dir.settings.nonce_journal_dir.symlink_to(small_disk, target_is_directory=True)
    return small_disk


async def test_a_journal_that_cannot_be_written_fails_closed_then_recovers(journal_on_small_disk, gateway):
    issued = gateway.issue(tier="unlimited")
    assert (await gateway.check(license_key=issued.key, feature="before"))[0] == 200
    ballast = fill(journal_on_small_disk)
    for _ in range(300):  # the journal's last page takes a few more nonces
        status, body = await gateway.check(license_key=issued.key, feature="full")
        if status != 200:
            break
    assert (status, body["decision"], body["reason"]) == (500, "deny", "INTERNAL_ERROR")
    answers = [await gateway.check(license_key=issued.key, feature="full") for _ in range(3)]
    assert {(status, body["decision"]) for status, body in answers} == {(500, "deny")}
    ballast.unlink()
    status, body = await gateway.check(license_key=issued.key, feature="after")
    assert (status, body["reason"]) == (200, "VALID")
    records = gateway.records
    assert [(r.feature, r.decision) for r in records[-5:]] == [("full", "deny")] * 4 + [("after", "allow")]
    assert all(r.decision == "allow" for r in records[:-5])
