"""Sealed bundles through the real ``portcullis`` command: issue --out, import, keys trust."""
from __future__ import annotations

import base64
import json

import pytest
from click.testing import CliRunner

from gateway.bundle import BEGIN, END
from gateway.cli import main
from tests.conftest import portcullis


class Gateway:
    """One data directory driven through the CLI, as its operator would."""

    def __init__(self, data) -> None:
        self.data = data
        self.runner = CliRunner()

    def __call__(self, *args: str, ok: bool = True):
        result = self.runner.invoke(main, [*args, "--data", str(self.data)])
        if ok:
            assert result.exit_code == 0, result.output
        return result

    def json(self, *args: str) -> dict:
        return json.loads(self(*args, "--json").output)


@pytest.fixture
def gateways(tmp_path):
    made = []
    for name in ("a", "b"):
        gw = Gateway(tmp_path / name)
        gw("init")
        made.append(gw)
    return made


def flip_a_bit(text: str) -> str:
    body = "".join(line for line in text.splitlines() if line and not line.startswith("-----"))
    raw = bytearray(base64.b64decode(body))
    raw[len(raw) // 2] ^= 0x01
    return f"{BEGIN}\n{base64.b64encode(bytes(raw)).decode()}\n{END}\n"


def test_intact_bundle_imports_idempotently(gateways, tmp_path):
    a, b = gateways
    out = tmp_path / "lic.bundle"
    recipient = b.json("keys", "show")["recipient"]
    issued = a.json("license", "issue", "--customer", "acme", "--tier", "pro", "--out", str(out),
                    "--recipient", recipient)
    b("keys", "trust", a.json("keys", "show")["issuer"])
    first = b.json("license", "import", str(out))
    assert first == {"license_id": issued["license_id"], "changed": True}
    assert b("license", "import", str(out)).output.strip() == f"license {issued['license_id']} already up to date"
    shown = b.json("license", "show", issued["license_id"])
    assert shown["customer"] == "acme" and issued["key"] not in json.dumps(shown)


def test_bundle_sealed_for_another_gateway_imports_only_there(gateways, tmp_path):
    a, b = gateways
    out = tmp_path / "for-b.bundle"
    a("license", "issue", "--customer", "acme", "--tier", "pro", "--out", str(out),
      "--recipient", b.json("keys", "show")["recipient"])
    c = Gateway(tmp_path / "c")
    c("init")
    c("keys", "trust", a.json("keys", "show")["issuer"])
    refused = c("license", "import", str(out), ok=False)
    assert refused.exit_code == 1 and refused.output.strip() == "Error: invalid license bundle"
    refused = a("license", "import", str(out), ok=False)  # not even its issuer can open it
    assert refused.exit_code == 1 and "invalid license bundle" in refused.output


def test_bundle_from_an_untrusted_issuer_needs_keys_trust(gateways, tmp_path):
    a, b = gateways
    out = tmp_path / "lic.bundle"
    a("license", "issue", "--customer", "acme", "--tier", "pro", "--out", str(out),
      "--recipient", b.json("keys", "show")["recipient"])
    assert b("license", "import", str(out), ok=False).exit_code == 1
    issuer = a.json("keys", "show")
    trusted = b.json("keys", "trust", issuer["issuer"])
    assert trusted == {"trusted_issuer_key_id": issuer["issuer_key_id"]}
    b("keys", "trust", issuer["issuer"])  # trusting twice is harmless
    assert b.json("license", "import", str(out))["changed"] is True


def test_keys_trust_refuses_a_malformed_key(gateways):
    a, _ = gateways
    result = portcullis("keys", "trust", "ed25519:not-a-key", "--data", str(a.data))
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("Error: ")  # no traceback


def test_tampered_bundle_is_one_line_exit_1_no_traceback(gateways, tmp_path):
    """Run as a real process: what an operator sees on the terminal, stdout and stderr."""
    a, _ = gateways
    out = tmp_path / "lic.bundle"
    a("license", "issue", "--customer", "acme", "--tier", "pro", "--out", str(out))
    bad = tmp_path / "tampered.bundle"
    bad.write_text(flip_a_bit(out.read_text()))
    result = portcullis("license", "import", str(bad), "--data", str(a.data))
    assert result.returncode == 1
    assert result.stdout == "" and result.stderr == "Error: invalid license bundle\n"


def test_an_older_bundle_cannot_roll_a_license_back(gateways, tmp_path):
    """The issuer suspends a license and sends the change; replaying the first bundle must not
    bring the license back, nor may replaying a bundle undo a change made on the receiving side."""
    a, b = gateways
    recipient = b.json("keys", "show")["recipient"]
    b("keys", "trust", a.json("keys", "show")["issuer"])
    first, suspended = tmp_path / "first.bundle", tmp_path / "suspended.bundle"
    lid = a.json("license", "issue", "--customer", "acme", "--tier", "pro", "--out", str(first),
                 "--recipient", recipient)["license_id"]
    assert b.json("license", "import", str(first))["changed"] is True
    a("license", "suspend", lid)
    assert a.json("license", "seal", lid, "--out", str(suspended), "--recipient", recipient)["license_id"] == lid
    assert b.json("license", "import", str(suspended))["changed"] is True
    assert b.json("license", "show", lid)["status"] == "suspended"

    refused = portcullis("license", "import", str(first), "--data", str(b.data))  # the rollback attempt
    assert refused.returncode == 1 and refused.stdout == ""
    assert len(refused.stderr.splitlines()) == 1 and "not newer" in refused.stderr  # no traceback
    assert b.json("license", "show", lid)["status"] == "suspended"

    b("license", "revoke", lid)  # a local decision on the receiving gateway...
    assert b("license", "import", str(suspended), ok=False).exit_code == 1  # ...that replay cannot undo
    assert b.json("license", "show", lid)["status"] == "revoked"
    a("license", "resume", lid)
    renewed = tmp_path / "renewed.bundle"
    a("license", "seal", lid, "--out", str(renewed), "--recipient", recipient)
    # Revocation is final, even against the issuer's newer word: a revoked key may have leaked.
    refused = b("license", "import", str(renewed), ok=False)
    assert refused.exit_code == 1 and refused.output == \
        f"Error: license {lid} is revoked, and revocation is final: issue a new license\n"
    assert b.json("license", "show", lid)["status"] == "revoked"
    missing = a("license", "seal", "lic_nosuchlicense", "--out", str(tmp_path / "none.bundle"), ok=False)
    assert missing.exit_code == 1 and missing.output.strip() == "Error: no license 'lic_nosuchlicense'"
    assert not (tmp_path / "none.bundle").exists()
