"""CLI tables escape what a terminal would obey, wherever the text came from (here: a customer
name given at issue time, as a bundle from another issuer could carry one)."""
from __future__ import annotations

import json
import unicodedata

from tests.conftest import portcullis

CUSTOMER = "\x1b]0;owned\x07acme\x1b[2K\r\u202egnp"


def test_license_list_shows_control_characters_as_escapes(tmp_path):
    data = str(tmp_path / "data")
    assert portcullis("init", "--data", data).returncode == 0
    issued = portcullis("license", "issue", "--customer", CUSTOMER, "--tier", "pro", "--json", "--data", data)
    assert issued.returncode == 0 and json.loads(issued.stdout)["license"]["customer"] == CUSTOMER  # stored as given
    listed = portcullis("license", "list", "--data", data)
    assert listed.returncode == 0
    assert not [ch for ch in listed.stdout if ch != "\n" and unicodedata.category(ch) in ("Cc", "Cf")]
    assert r"\x1b]0;owned\x07acme\x1b[2K\r\u202egnp" in listed.stdout
