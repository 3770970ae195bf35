"""The openssl + curl example of docs/integration.md, run with bash against a real gateway."""
from __future__ import annotations

import asyncio
import json
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

DOC = Path(__file__).parents[2] / "docs" / "integration.md"


@pytest.fixture
def script(tmp_path) -> Path:
    """The documented script, exactly as a reader would copy it."""
    [text] = re.findall(r"```bash\n(#!/usr/bin/env bash\n.*?)```", DOC.read_text(), flags=re.S)
    path = tmp_path / "portcullis-check.sh"
    path.write_text(text)
    return path


async def run(script: Path, live, *args: str, secret: str | None = None) -> dict:
    env = dict(os.environ, PORT_URL=live.url.rstrip("/"), PORT_KEY_ID=live.data.service.key_id,
               PORT_SECRET=secret or live.data.service.secret)
    proc = await asyncio.create_subprocess_exec("bash", str(script), *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


async def test_the_shell_example_gets_decisions(script, live):
    issued = live.issue(tier="basic", expires_at=datetime.now(timezone.utc) + timedelta(days=200))
    allow = await run(script, live, issued.key, "view", "u-123")
    again = await run(script, live, issued.key, "view", "u-123")  # a fresh nonce: not a replay
    deny = await run(script, live, issued.key, "admin", "u-123")
    assert (allow["decision"], allow["reason"], again["reason"]) == ("allow", "VALID", "VALID")
    assert (deny["decision"], deny["reason"]) == ("deny", "FEATURE_NOT_ENTITLED")
    assert [(r.caller_id, r.auth_method, r.user_id) for r in live.records] == [("service", "hmac", "u-123")] * 3


async def test_the_shell_example_without_a_user_and_with_a_wrong_secret(script, live):
    issued = live.issue(tier="unlimited", expires_at=datetime.now(timezone.utc) + timedelta(days=200))
    assert (await run(script, live, issued.key, "anything"))["decision"] == "allow"
    refused = await run(script, live, issued.key, "anything", secret="ps_wrong")
    assert refused["reason"] == "UNAUTHENTICATED" and live.records[-1].auth_error == "bad_signature"
