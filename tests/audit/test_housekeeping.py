"""A running gateway compacts its own trail: closed hours become one file, without cron."""
from __future__ import annotations

import asyncio
import time

from gateway.audit.manifest import Manifest, verify
from gateway.http.app import create_app
from gateway.keyfiles import audit_key
from tests.audit.conftest import add_file


async def test_a_running_gateway_merges_closed_hours_by_itself(aiohttp_client, data_dir) -> None:
    settings = data_dir.settings.with_(audit_compact_s=0.2)
    key = audit_key(settings.keys_dir)
    manifest = Manifest(settings.audit_dir, key)
    for n in range(3):  # an hour of 2026-01-01, closed long ago, written as three files
        add_file(settings.audit_dir, manifest, 0, f"old-w0-{n}")
    hour = settings.audit_dir / "date=2026-01-01" / "hour=12"

    await aiohttp_client(create_app(settings))
    deadline = time.monotonic() + 60
    while len(list(hour.glob("*.parquet"))) != 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    (merged,) = hour.glob("*.parquet")
    assert merged.name.startswith("compact-")
    report = verify(settings.audit_dir, key.public_key())
    assert report.ok, report.problems
    assert report.rows == 9



async def test_a_running_gateway_prunes_days_past_its_retention(aiohttp_client, data_dir) -> None:
    settings = data_dir.settings.with_(audit_retention_days=30, instance="gw1")
    key = audit_key(settings.keys_dir)
    manifest = Manifest(settings.audit_dir, key, "gw1")
    old = add_file(settings.audit_dir, manifest, 0, "gw1-w0-old")  # 2026-01-01: long past 30 days
    other = add_file(settings.audit_dir, Manifest(settings.audit_dir, key, "gw2"), 0, "gw2-w0-old")

    await aiohttp_client(create_app(settings))
    deadline = time.monotonic() + 60
    while (settings.audit_dir / old).exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not (settings.audit_dir / old).exists(), "pruned when the gateway started"
    assert (settings.audit_dir / other).exists(), "another host's file is that host's to prune"
    report = verify(settings.audit_dir, key.public_key())
    assert report.ok and report.files == 1, report.problems
