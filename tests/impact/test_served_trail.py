"""Policy impact over a trail a real ``portcullis serve`` wrote (signed requests, durable audit,
Parquet): every answer it gave is given again by the replay under the current policy, and the
proposal's effect is found."""
from __future__ import annotations

import json
import urllib.request

from tests.conftest import ServerProcess, body_of, portcullis
from tests.impact_history import PROPOSED


def _post(server: ServerProcess, creds, path: str, doc: dict) -> dict:
    body = body_of(doc)
    request = urllib.request.Request(server.url + path, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **creds.headers("POST", path, body)})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_a_served_trail_replays_exactly(data_dir, tmp_path):
    issued = data_dir.issue(customer="acme", tier="basic")
    server = ServerProcess(data_dir.path)
    try:
        answers = [_post(server, data_dir.service, "/v1/check", {"license_key": issued.key, "feature": feature,
                                                                 "user_id": user})
                   for user, feature in (("u1", "view"), ("u2", "reports.daily"), ("u3", "reports.daily"),
                                         ("u4", "reports.daily"), ("u5", "reports.daily"), ("u6", "reports.daily"))]
        batch = _post(server, data_dir.service, "/v1/check/batch", {"checks": [
            {"license_key": issued.key, "feature": "view", "user_id": "u2"},
            {"license_key": "LK-NOPE-NOPE-NOPE-NOPE-NOPE", "feature": "view"}]})
    finally:
        assert server.stop() == 0  # a graceful stop writes every acknowledged record to Parquet
    assert [a["reason"] for a in answers] == ["VALID"] * 5 + ["SEAT_OVERAGE"]
    assert [r["reason"] for r in batch["results"]] == ["SEAT_OVERAGE", "KEY_NOT_FOUND"]
    proposal = tmp_path / "proposed.toml"
    proposal.write_text(PROPOSED)
    done = portcullis("policy", "impact", str(proposal), "--days", "1", "--format", "json", "--data", str(data_dir.path))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # 7 answers reached the engine (the unknown key did not): all given again
    assert report["self_check"] == {"replayed": 7, "reproduced": 7, "differ": []}
    # without `view`, u1 holds no seat: u2-u4 fill the 3, u5 and u6 are refused, and so are both views
    assert sorted((e["user_id"], e["before"], e["after"]) for e in report["examples"]) == [
        ("u1", "allow/VALID", "deny/FEATURE_NOT_ENTITLED"),
        ("u2", "alert/SEAT_OVERAGE", "deny/FEATURE_NOT_ENTITLED"),
        ("u5", "allow/VALID", "deny/SEAT_LIMIT_EXCEEDED"),
        ("u6", "alert/SEAT_OVERAGE", "deny/SEAT_LIMIT_EXCEEDED")]
