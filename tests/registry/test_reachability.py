"""How a worker reacts to the shared registry's faults (gateway.registry.reachability), and the
URL that must never be quoted: the pieces the several-hosts tests rely on, each on its own."""
from __future__ import annotations

import pytest

from gateway.registry import LicenseIndex, RegistryBusy, RegistryUnavailable
from gateway.registry.reachability import Reachability, ReachableNonces
from gateway.types import Status
from tests.conftest import portcullis
from tests.engine.test_engine import build_license


class FlakyNonces:
    """A shared replay window that fails with ``fault`` while set; remembers what it absorbed."""

    def __init__(self) -> None:
        self.fault: Exception | None = None
        self.seen: set[str] = set()
        self.absorbed: list[tuple[str, int]] = []

    async def record(self, nonce: str, now: float) -> bool:
        if self.fault:
            raise self.fault
        fresh = nonce not in self.seen
        self.seen.add(nonce)
        return fresh

    def absorb(self, entries) -> None:
        if self.fault:
            raise self.fault
        self.absorbed += entries
        self.seen.update(nonce for nonce, _ in entries)

    def close(self) -> None:
        pass


def test_a_slow_answer_fails_one_request_and_an_outage_the_worker():
    reach = Reachability()
    reach.failed(RegistryBusy("lock wait"))
    assert reach.reachable
    reach.require()
    reach.failed(RegistryUnavailable("connection refused"))
    assert not reach.reachable
    with pytest.raises(RegistryUnavailable, match="connection refused"):
        reach.require()
    reach.succeeded()
    assert reach.reachable


async def test_deny_mode_refuses_a_nonce_at_once_while_the_registry_is_out_of_reach():
    shared, reach = FlakyNonces(), Reachability()
    nonces = ReachableNonces(shared, reach, 300)
    shared.fault = RegistryUnavailable("down")
    with pytest.raises(RegistryUnavailable):
        await nonces.record("n1", 1000.0)
    shared.fault = None  # back, but nobody has seen it yet: still refused without asking
    with pytest.raises(RegistryUnavailable):
        await nonces.record("n2", 1000.0)
    assert shared.seen == set()


async def test_cached_mode_holds_nonces_here_and_hands_them_over_when_the_registry_is_back():
    shared, reach = FlakyNonces(), Reachability(cached=True)
    nonces = ReachableNonces(shared, reach, 300)
    shared.fault = RegistryUnavailable("down")
    assert await nonces.record("n1", 1000.0)
    assert not await nonces.record("n1", 1001.0), "a replay to this host is still refused"
    shared.fault = RegistryBusy("lock wait")
    reach.succeeded()
    with pytest.raises(RegistryBusy):  # slow, not gone: this request fails, nothing is held
        await nonces.record("n2", 1002.0)
    shared.fault = None
    assert await nonces.record("n3", 1003.0)
    assert shared.absorbed == [("n1", 1601)] and "n1" in shared.seen


class Answers:
    """A store whose reads answer as scripted: (revision, licenses changed)."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)

    def licenses_since(self, revision: int):
        return self.answers.pop(0)


def test_the_index_never_takes_a_read_older_than_what_it_has():
    """Two reads may race (the upkeep's, off the loop, and an admin request's): the older one,
    applied last, must not bring back a license as it was before a revocation."""
    active, revoked = build_license({}), build_license({"status": "revoked"})
    index = LicenseIndex(Answers((0, [])))
    assert index.apply(5, [revoked]) == 1
    assert index.apply(4, [active]) == 0 and index.apply(4, []) == 0
    assert index.by_id[active.license_id].status is Status.REVOKED and index.revision == 5


def test_a_malformed_registry_url_is_refused_without_being_quoted():
    """libpq quotes the URL it cannot parse, password and all; the CLI must not."""
    result = portcullis("migrate", env={"PORTCULLIS_REGISTRY_URL": "postgresql://u:s3cret@[::1/db"})
    assert result.returncode != 0
    assert "not a valid PostgreSQL URL" in result.stderr
    assert "s3cret" not in result.stdout + result.stderr
