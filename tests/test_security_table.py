"""SECURITY.md's threat table stays true: every row names tests, every named test exists, and
the threats the gateway promises to cover all have a row."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from tests.proofs import outcomes_of

ROOT = Path(__file__).parent.parent
SECURITY = ROOT / "SECURITY.md"
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")
# Threats the table must keep covering (matched against the threat column, case-insensitively).
REQUIRED = ["stolen audit trail", "replay", "clock skew", "signature forgery", "timing oracle", "key probing",
            "auth-failure flood", "oversized or malformed bodies", "header floods", "slow clients",
            "tampered, forged or misaddressed license bundles", "rollback", "rogue client certificates", "secrets leaking",
            "policy corruption", "audit tampering", "audit unavailability"]


def rows() -> list[tuple[str, str, str]]:
    """(threat, mitigation, proof) for each row of the threat table."""
    text = SECURITY.read_text(encoding="utf-8")
    table = text.split("## Threats and mitigations", 1)[1].split("\n## ", 1)[0]
    found = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] not in ("threat", "---") and not set(cells[0]) <= {"-"}:
            found.append((cells[0], cells[1], cells[2]))
    return found


def references() -> list[tuple[str, str]]:
    return sorted({ref for _, _, proof in rows() for ref in REFERENCE.findall(proof)})


def test_every_row_has_a_mitigation_and_names_tests():
    assert len(rows()) >= len(REQUIRED)
    for threat, mitigation, proof in rows():
        assert mitigation, threat
        assert REFERENCE.findall(proof), f"{threat!r} names no test"
        # Nothing but test references in the proof column: a typo cannot hide as prose.
        assert REFERENCE.sub("", proof).replace(",", "").strip() == "", f"{threat!r}: unparsable proof {proof!r}"


@pytest.mark.parametrize("threat", REQUIRED)
def test_every_promised_threat_has_a_row(threat):
    assert any(threat in row[0].lower() for row in rows()), threat


@pytest.mark.parametrize("path,name", references(), ids=[f"{p}::{n}" for p, n in references()])
def test_every_named_test_exists(path, name):
    assert (ROOT / path).is_file(), path
    module = importlib.import_module(path[:-3].replace("/", "."))
    test = getattr(module, name, None)
    assert callable(test), f"{path} has no test {name}"
    assert name.startswith("test_")


@pytest.mark.parametrize("path,name", references(), ids=[f"{p}::{n}" for p, n in references()])
def test_every_named_test_passed_in_this_session(path, name):
    """Runs after every other test (tests/proofs.py): a cited proof that failed or was skipped
    proves nothing. Run alone, without the cited tests, there is nothing to check."""
    outcomes = outcomes_of(path, name)
    if outcomes is None:
        pytest.skip(f"{path}::{name} is not part of this run")
    assert set(outcomes.values()) == {"passed"}, outcomes
