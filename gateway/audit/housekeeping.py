"""The gateway keeps its own trail compact: no cron job to forget.

A short rotation (``audit_rotate_s``, 5 s) makes decisions queryable within seconds, at the
price of many small Parquet files per hour, and reads over many small files are slow. So one
worker per gateway (worker 0) merges each closed hour into one file every ``audit_compact_s``
seconds, with the same code and the same lock as ``portcullis audit compact``, which stays
safe to run beside it. The merge runs in a thread; a failure is logged and retried next time.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from gateway.audit.compact import compact
from gateway.config import Settings
from gateway.keyfiles import audit_key

log = logging.getLogger("portcullis.audit")


async def compact_forever(settings: Settings, clock: Callable[[], datetime]) -> None:
    """Every ``settings.audit_compact_s``: merge the hours closed for ``hour_closed_after``."""
    key = audit_key(settings.keys_dir)
    while True:
        await asyncio.sleep(settings.audit_compact_s)
        if not settings.audit_dir.is_dir():
            continue
        try:
            merges = await asyncio.to_thread(compact, settings.audit_dir, key, now=clock(),
                                             grace=settings.hour_closed_after)
        except Exception:  # a bug or a full disk must not stop the next attempt, nor the gateway
            log.exception("audit compaction failed; retried in %s s", settings.audit_compact_s,
                          extra={"event": "audit_compact_failed"})
            continue
        for merge in merges:
            if merge.skipped:
                log.warning("audit compaction left %s as it is: %s", merge.partition, merge.skipped,
                            extra={"event": "audit_compact_skipped", "partition": merge.partition})
            else:
                log.info("audit hour %s merged: %d files, %d rows", merge.partition, merge.files, merge.rows,
                         extra={"event": "audit_compacted", "partition": merge.partition, "files": merge.files})
