"""A planted history for the policy impact tests: real decisions of the real port (engine and
SQLite registry, usage and all) at chosen moments, written as the gateway's Parquet trail, and a
proposed policy whose effect on each of them is worked out by hand below.

The proposal (``PROPOSED``) changes the test policy in four ways: tier ``basic`` loses the
``view`` feature and goes from 5 seats to 3, tier ``strict``'s export quota goes from 10 to 6 a
day, and the grace period from 7 days to 2.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from gateway.admin import set_status
from gateway.callers import Caller
from gateway.licenses import from_us
from gateway.loopthread import LoopThread
from gateway.port import Port, read_check
from gateway.audit.schema import AUDIT_SCHEMA
from gateway.types import Status
from tests.conftest import TEST_POLICY, DataDir

DAY, HOUR = timedelta(days=1), timedelta(hours=1)
# The planted history ends at noon (UTC) four weeks before the tests run, so that a look-back
# from the real clock (the endpoint and the dashboard, which take no --now) always reaches it
# within the 366 days they allow.
NOW = datetime.now(timezone.utc).replace(hour=12, minute=0, second=0, microsecond=0) - 28 * DAY
LOOK_BACK_DAYS = 60  # from the real clock: the whole planted history (20 days before NOW)
PROPOSED = (TEST_POLICY.read_text()
            .replace("grace_days = 7", "grace_days = 2")
            .replace('features = ["view", "reports.*"]\nseats = 5', 'features = ["reports.*"]\nseats = 3')
            .replace('export = { limit = 10, period = "day" }', 'export = { limit = 6, period = "day" }'))
assert PROPOSED.count("\n") == TEST_POLICY.read_text().count("\n") and PROPOSED != TEST_POLICY.read_text()

# What changes, worked out by hand: customer -> [(before, after), ...] in time order.
EXPECTED = {
    # basic loses `view`: u1 and u2's checks are refused, so under the proposal they hold no seat;
    # u3..u5 then fill the 3 seats and u6 (the 6th seat, tolerated as overage under 5 seats) is
    # refused. u1's second check was an overage alert (6 seats held of 5), now it is refused too.
    "acme": [("allow/VALID", "deny/FEATURE_NOT_ENTITLED"), ("allow/VALID", "deny/FEATURE_NOT_ENTITLED"),
             ("alert/SEAT_OVERAGE", "deny/SEAT_LIMIT_EXCEEDED"), ("alert/SEAT_OVERAGE", "deny/FEATURE_NOT_ENTITLED")],
    # 3 + 3 of 6 a day reaches the 80 % warning; 9 is beyond 6 plus 10 % overage. The next day's
    # check starts a new period and is unchanged.
    "globex": [("allow/VALID", "alert/QUOTA_NEAR_LIMIT"), ("alert/QUOTA_NEAR_LIMIT", "deny/QUOTA_EXCEEDED")],
    # expired 2.5 days before its check: in grace for 7 days, not for 2; its check 4 hours after
    # expiry stays in grace.
    "initech": [("alert/EXPIRED_IN_GRACE", "deny/LICENSE_EXPIRED")],
}


def plant(data: DataDir) -> dict[str, int]:
    """Decide the planted checks through a real port and write their records as the trail;
    returns how many records of each kind were written."""
    lics = {name: data.issue(customer=name, **fields) for name, fields in {
        "acme": {"tier": "basic", "expires_at": NOW + 400 * DAY},
        "globex": {"tier": "strict", "expires_at": NOW + 400 * DAY},
        "initech": {"tier": "unlimited", "expires_at": NOW - 3 * DAY},
        "hooli": {"tier": "unlimited", "expires_at": None},
        "umbrella": {"tier": "unlimited", "expires_at": NOW + 400 * DAY},
    }.items()}
    port = Port(data.settings)
    service, narrow = Caller("service"), Caller("narrow", features=("view",))
    records = []
    deciding = LoopThread("plant")  # the port decides on an event loop; callers may be running one

    def ask(at: datetime, name: str | None, feature: str, user: str | None = None, quantity: int = 0,
            caller: Caller = service, endpoint: str = "check") -> None:
        ex = port.open(endpoint, instance="gw-test-w0", now=at)
        key = lics[name].key if name else "LK-NOPE-NOPE-NOPE-NOPE-NOPE"
        body = read_check(ex, {"license_key": key, "feature": feature, "user_id": user, "quantity": quantity})
        deciding.run(port.check(ex, body, caller))
        records.append(ex.record())

    t = NOW - 3 * DAY
    for i, (user, feature) in enumerate([("u1", "view"), ("u2", "view"), ("u3", "reports.daily"),
                                         ("u4", "reports.daily"), ("u5", "reports.daily"), ("u6", "reports.daily")]):
        ask(t + i * HOUR, "acme", feature, user)
    ask(t + 7 * HOUR, "acme", "view", "u1")  # u1 again: holds its seat under the current policy
    t = NOW - 2 * DAY
    for i, (user, quantity) in enumerate([("g1", 3), ("g1", 3), ("g2", 3)]):
        ask(t + i * HOUR, "globex", "export", user, quantity)
    ask(NOW - DAY, "globex", "export", "g1", 1)
    ask(NOW - 3 * DAY + 4 * HOUR, "initech", "anything")
    ask(NOW - 12 * HOUR, "initech", "anything")
    for i in range(3):  # items of a batch, each decided and recorded on its own
        ask(NOW - (5 - i) * DAY, "hooli", "export", f"h{i}", endpoint="batch")
    ask(NOW - 5 * DAY, "umbrella", "export")
    with data.store() as store:
        set_status(store, lics["umbrella"].license.license_id, Status.REVOKED)
    port.refresh()
    ask(NOW - 4 * DAY, "umbrella", "export")  # LICENSE_REVOKED: the trail says it was revoked by then
    replayable = len(records)
    ask(NOW - 2 * DAY, None, "export")  # KEY_NOT_FOUND: no license, nothing to replay
    ask(NOW - 2 * DAY, "acme", "export", "u1", caller=narrow)  # 403 before the engine
    ask(NOW - 20 * DAY, "hooli", "export", "h0")  # outside a 7-day window
    deciding.stop()
    port.close()
    write_trail(data.settings.audit_dir, records)
    return {"replayable": replayable, "written": len(records)}


def write_trail(audit_dir: Path, records: list) -> None:
    """The records as hourly Parquet files under ``date=/hour=``, as the gateway lays them out."""
    by_hour: dict[datetime, list[dict]] = {}
    for rec in records:
        row = rec._asdict() | {"ts": from_us(rec.ts), "expires_at": rec.expires_at and from_us(rec.expires_at)}
        by_hour.setdefault(row["ts"].replace(minute=0, second=0, microsecond=0), []).append(row)
    for hour, rows in by_hour.items():
        folder = audit_dir / f"date={hour:%Y-%m-%d}" / f"hour={hour:%H}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=AUDIT_SCHEMA), folder / "gw-test-w0-1.parquet")


def changes_by_customer(report: dict) -> dict[str, list[tuple[str, str]]]:
    """The report's changed decisions as customer -> [(before, after), ...], one per record."""
    found: dict[str, list[tuple[str, str]]] = {}
    for row in report["by_customer"]:
        found.setdefault(row["customer"], []).extend([(row["before"], row["after"])] * row["records"])
    return {customer: sorted(pairs) for customer, pairs in found.items()}
