"""Every setting is documented in docs/settings.md (a setting nobody can find does not exist)."""
from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from gateway.config import Settings

DOC = Path(__file__).parent.parent / "docs" / "settings.md"


def _documented() -> set[str]:
    return set(re.findall(r"^\| `([a-z_0-9]+)` \|", DOC.read_text(encoding="utf-8"), flags=re.MULTILINE))


def test_every_setting_is_documented():
    settings = {f.name for f in fields(Settings) if f.name != "extra"}
    assert settings - _documented() == set(), "undocumented settings"


def test_no_documented_setting_is_gone():
    settings = {f.name for f in fields(Settings) if f.name != "extra"}
    assert _documented() - settings == set(), "documented settings that do not exist"
