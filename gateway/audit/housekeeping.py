"""The gateway keeps its own trail compact and within its retention: no cron job to forget.

A short rotation (``audit_rotate_s``, 5 s) makes decisions queryable within seconds, at the
price of many small Parquet files per hour, and reads over many small files are slow. So one
worker per gateway (worker 0) merges each closed hour into one file every ``audit_compact_s``
seconds, and, with ``audit_retention_days`` set, prunes the days past it when it starts and
then once a day, with the same code and the same lock as ``portcullis audit compact`` and
``portcullis audit prune``, which stay safe to run beside it. Each works on this host's own
chain only. The work runs in a thread; a failure is logged and retried next time.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from gateway.audit.compact import compact
from gateway.audit.retention import ROLLUPS_DIR, prune
from gateway.config import Settings
from gateway.keyfiles import audit_key

log = logging.getLogger("portcullis.audit")
PRUNE_EVERY_S = 86_400.0


async def keep_forever(settings: Settings, clock: Callable[[], datetime]) -> None:
    """Compact every ``audit_compact_s`` (if not 0) and prune daily (if ``audit_retention_days``)."""
    jobs = []
    if settings.audit_compact_s > 0:
        jobs.append(_every(settings.audit_compact_s, lambda: _compact(settings, clock), "compact", first=False))
    if settings.audit_retention_days > 0:
        jobs.append(_every(PRUNE_EVERY_S, lambda: _prune(settings, clock), "prune", first=True))
    await asyncio.gather(*jobs)


async def _every(interval: float, job: Callable[[], None], name: str, *, first: bool) -> None:
    if not first:
        await asyncio.sleep(interval)
    while True:
        try:
            await asyncio.to_thread(job)
        except Exception:  # a bug or a full disk must not stop the next attempt, nor the gateway
            log.exception("audit %s failed; retried in %s s", name, interval, extra={"event": f"audit_{name}_failed"})
        await asyncio.sleep(interval)


def _compact(settings: Settings, clock: Callable[[], datetime]) -> None:
    if not settings.audit_dir.is_dir():
        return
    for merge in compact(settings.audit_dir, audit_key(settings.keys_dir), now=clock(),
                         grace=settings.hour_closed_after, host=settings.host_name):
        if merge.skipped:
            log.warning("audit compaction left %s as it is: %s", merge.partition, merge.skipped,
                        extra={"event": "audit_compact_skipped", "partition": merge.partition})
        else:
            log.info("audit hour %s merged: %d files, %d rows", merge.partition, merge.files, merge.rows,
                     extra={"event": "audit_compacted", "partition": merge.partition, "files": merge.files})


def _prune(settings: Settings, clock: Callable[[], datetime]) -> None:
    if not settings.audit_dir.is_dir():
        return
    for day in prune(settings.audit_dir, audit_key(settings.keys_dir), host=settings.host_name, now=clock(),
                     retention_days=settings.audit_retention_days, rollups_dir=settings.data_dir / ROLLUPS_DIR):
        log.info("audit day %s pruned: %d files, %d rows", day.day, day.files, day.rows,
                 extra={"event": "audit_pruned", "day": day.day, "files": day.files})
