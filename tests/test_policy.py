"""Policy loading: a broken policy is refused with an error that names file, tier and field."""
from __future__ import annotations

from pathlib import Path

import pytest

from gateway.policy import PolicyError, load_policy, parse_policy, policy_version

ROOT = Path(__file__).parents[1]


def test_tracked_defaults_are_the_packaged_defaults():
    for name in ("policy.toml", "callers.toml"):
        assert (ROOT / "data" / name).read_bytes() == (ROOT / "gateway" / "defaults" / name).read_bytes()


def test_default_policy_loads():
    policy = load_policy(ROOT / "data" / "policy.toml")
    assert {"free", "pro", "enterprise"} <= set(policy.tiers)
    assert policy.version == policy_version((ROOT / "data" / "policy.toml").read_bytes())
    assert len(policy.version) == 12


@pytest.mark.parametrize("text,message", [
    ("tiers = 3", "at least one tier"),
    ("[tiers.pro]\nseats = 3", "tier 'pro'.features: missing"),
    ("[tiers.pro]\nfeatures = 'x'", "tier 'pro'.features: must be a list"),
    ("[tiers.pro]\nfeatures = ['a*b']", "only a trailing '*'"),
    ("[tiers.pro]\nfeatures = ['a']\nseats = 0", "tier 'pro'.seats: must be >= 1"),
    ("[tiers.pro]\nfeatures = ['a']\nseats = 'many'", "tier 'pro'.seats: must be an integer"),
    ("[tiers.pro]\nfeatures = ['a']\ncolour = 1", "tier 'pro': unknown field(s) colour"),
    ("[tiers.pro]\nfeatures = ['a']\nquotas = { a = { limit = 5, period = 'week' } }", "quotas.a.period"),
    ("[tiers.pro]\nfeatures = ['a']\nquotas = { a = { limit = -5 } }", "quotas.a.limit: must be >= 0"),
    ("grace_days = 'x'\n[tiers.pro]\nfeatures = ['a']", "grace_days: must be an integer"),
    ("grace = 3\n[tiers.pro]\nfeatures = ['a']", "unknown setting(s) grace"),
    ("[tiers.pro\nfeatures = ['a']", "not valid TOML"),
])
def test_invalid_policies_name_the_problem(text, message):
    with pytest.raises(PolicyError) as info:
        parse_policy(text.encode(), "data/policy.toml")
    assert message in str(info.value) and str(info.value).startswith("data/policy.toml")


def test_missing_policy_file(tmp_path):
    with pytest.raises(PolicyError, match="cannot read policy"):
        load_policy(tmp_path / "nope.toml")
