"""``POST /v1/admin/policy/impact``: the policy impact report for tooling, audited as
``admin.policy_impact``.

The body is the proposed policy (TOML). It is validated here, so a broken one is a 400 naming the
tier and field; the replay itself runs as ``portcullis policy impact`` in a child process, so the
minute of CPU it may take is never spent under this event loop's GIL, and the command stays the
one implementation.
"""
from __future__ import annotations

import asyncio
import json
import logging
import sys
import tempfile
from pathlib import Path

from aiohttp import web

from gateway.cli.policy import DEFAULT_DAYS
from gateway.http.gate import Refused
from gateway.http.handlers import admin_body, deciding
from gateway.http.keys import GATE
from gateway.policy import PolicyError, parse_policy
from gateway.types import Decision, Outcome, Reason

log = logging.getLogger("portcullis.http")
POLICY_TYPES = ("application/toml", "text/plain", "application/octet-stream")
MAX_DAYS = 366
SOURCE = "request body"  # how a broken policy's error names what was sent


def _days(request: web.Request) -> int | None:
    text = request.query.get("days", str(DEFAULT_DAYS))
    return int(text) if text.isdigit() and 1 <= int(text) <= MAX_DAYS else None


async def policy_impact(request: web.Request) -> web.Response:
    gate = request.app[GATE]
    ex = gate.open(request, "admin.policy_impact")
    with deciding(ex):
        raw, caller = await admin_body(request, ex, POLICY_TYPES)
        days = _days(request)
        if days is None:
            ex.refuse(Reason.INVALID_REQUEST, f"days: must be a whole number from 1 to {MAX_DAYS}")
            raise Refused
        try:
            proposed = parse_policy(raw, SOURCE)
        except PolicyError as exc:
            ex.refuse(Reason.INVALID_REQUEST, str(exc))
            raise Refused from None
        report = await _replay(gate.port.settings.data_dir, raw, days)
        if isinstance(report, str):
            log.error("policy impact failed", extra={"event": "policy_impact_failed", "error": report})
            ex.refuse(Reason.INTERNAL_ERROR, report)
            raise Refused
        log.info("policy impact replayed", extra={"event": "policy_impact", "caller_id": caller.caller_id,
                                                   "proposed": proposed.version, "changed": report["changed"]})
        ex.decide(None, Decision(Outcome.ALLOW, Reason.VALID,
                                 f"{report['changed']} of {report['replayed']} replayed decisions would change "
                                 f"under policy {proposed.version}"))
        ex.extra = {"impact": report}
    return await gate.finish([ex])


async def _replay(data_dir: Path, policy: bytes, days: int) -> dict | str:
    """The command's JSON report, or its one-line error."""
    with tempfile.TemporaryDirectory(prefix="portcullis-impact-") as folder:
        path = Path(folder) / "proposed.toml"
        path.write_bytes(policy)
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "policy", "impact", str(path), "--days", str(days), "--format", "json",
            "--data", str(data_dir), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await child.communicate()
        finally:  # the handler cancelled (the gateway stopping): the replay is not left running
            if child.returncode is None:
                child.kill()
                await child.wait()
    if child.returncode != 0:
        lines = err.decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else f"policy impact exited with {child.returncode}"
    report = json.loads(out)
    report["proposed_source"] = SOURCE
    return report
