"""How each test of this session ended, for tests that check that other tests proved something.

SECURITY.md cites tests as proofs; a proof that was skipped or failed proves nothing, so the
threat table's check runs last and looks up the cited tests' outcomes here. The hooks are
re-exported by ``tests/conftest.py``.
"""
from __future__ import annotations

import pytest

LAST = "tests/test_security_table.py::test_every_named_test_passed_in_this_session"
COLLECTED: set[str] = set()
OUTCOMES: dict[str, str] = {}  # node id -> "passed" | "failed" | "skipped"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    COLLECTED.update(item.nodeid for item in items)
    last = [item for item in items if item.nodeid.startswith(LAST)]
    items[:] = [item for item in items if not item.nodeid.startswith(LAST)] + last


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed or report.skipped:  # in any phase: setup, call or teardown
        OUTCOMES[report.nodeid] = "failed" if report.failed else OUTCOMES.get(report.nodeid, "skipped")
    elif report.when == "call":
        OUTCOMES.setdefault(report.nodeid, "passed")


def outcomes_of(path: str, name: str) -> dict[str, str] | None:
    """Outcomes of test ``name`` in ``path`` (each parametrization), None if it was not collected."""
    ids = [n for n in COLLECTED if n == f"{path}::{name}" or n.startswith(f"{path}::{name}[")]
    return {n: OUTCOMES.get(n, "not run") for n in ids} if ids else None
