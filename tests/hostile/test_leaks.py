"""What an attacker gets from a stolen trail, log or answer: never a secret, a license key or a
key hash; and a fingerprint that cannot be matched against keys without this deployment's secret."""
from __future__ import annotations

import hashlib
import json
import logging

import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.keyfiles import fingerprint_secret
from gateway.licenses import key_fingerprint, key_hash
from gateway.port import Port
from tests.conftest import make_data_dir


def test_key_fp_cannot_be_matched_without_the_deployment_secret(tmp_path):
    here, there = (make_data_dir(tmp_path / name) for name in ("here", "there"))
    key = "LK-ABCDE-FGHIJ-KLMNO-PQRST-UVWXY"
    hashed = key_hash(key)
    fps = [Port(d.settings).fingerprint(hashed) for d in (here, there)]
    assert fps[0] != fps[1]  # the same key, two deployments: unrelated fingerprints
    assert fps[0] == key_fingerprint(fingerprint_secret(here.settings.keys_dir), hashed)
    for guessable in (hashed, hashlib.sha256(hashed.encode()).hexdigest(), hashlib.sha256(key.encode()).hexdigest()):
        assert fps[0] not in guessable  # not a truncation of anything computable from the key alone


async def test_no_secret_reaches_logs_audit_records_or_answers(gateway, caplog):
    caplog.set_level(logging.DEBUG)
    issued = gateway.issue(tier="unlimited")
    answers = []
    answers.append(await gateway.check(license_key=issued.key, feature="x"))
    answers.append(await gateway.check(license_key=issued.key + "X", feature="x"))
    answers.append(await gateway.post("/v1/check", {"license_key": issued.key, "feature": "bad name!"}))
    forged = {**gateway.data.service.headers("POST", "/v1/check", b"{}"), "X-Port-Signature": "0" * 64}
    response = await gateway.client.post("/v1/check", data=b"{}", headers={**forged, "Content-Type": "application/json"})
    answers.append((response.status, await response.json()))
    answers.append(await gateway.get(f"/v1/licenses/{issued.license.license_id}", creds=gateway.data.admin))
    answers.append(await gateway.post("/v1/admin/policy/reload", {}, creds=gateway.data.admin))
    secrets = [gateway.data.service.secret, gateway.data.admin.secret, gateway.data.narrow.secret, issued.key,
               issued.license.key_hash]
    logged = "\n".join(f"{r.getMessage()} {json.dumps(r.__dict__, default=str)}" for r in caplog.records)
    trail = json.dumps(gateway.records)
    said = json.dumps(answers)
    for secret in secrets:
        assert secret not in logged and secret not in trail and secret not in said
    assert len(gateway.records) == 6 and any(r.name.startswith("portcullis") for r in caplog.records)


@pytest.mark.parametrize("command", [[], ["call"], ["serve"], ["caller", "add"], ["license", "issue"], ["keys", "show"]])
def test_help_never_shows_a_secret_from_the_environment(command):
    env = {"PORTCULLIS_SECRET": "ps_from-the-environment-0123456789", "PORTCULLIS_KEY_ID": "pk_0123456789abcdef"}
    result = CliRunner(env=env).invoke(main, [*command, "--help"])
    assert result.exit_code == 0 and env["PORTCULLIS_SECRET"] not in result.output
