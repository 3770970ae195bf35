"""What ``portcullis dashboard`` does in the background: keep the rollups current
(``analytics.rollups``), so that the Overview reads per-hour summaries instead of every record of
its window, and have the DuckDB connection open before the first visitor needs it.

The connection is opened first: visitors need it, the rollups can wait a moment (a connection
opened before them only reads more of the raw trail). The first build waits
:data:`FIRST_BUILD_AFTER_S`, so that it does not compete for the CPU with the first page views
after a restart, which are the ones someone is waiting for. The connection reads the rollups' coverage
when it opens, so whenever they change on disk (this thread's build, `portcullis rollup`, a
report's), it is renewed within a round.
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone

from analytics import rollups
from dashboard import data

log = logging.getLogger("portcullis.dashboard")
INTERVAL_S = 60.0
FIRST_BUILD_AFTER_S = 10.0


def run(root: str, grace: timedelta, stop: threading.Event) -> None:
    """Open the connection, then build the rollups every :data:`INTERVAL_S` until ``stop``,
    renewing the connection whenever the rollups on disk changed since it opened."""
    seen = rollups.signature(root)  # before opening: a change in between renews it next round
    try:
        data.open_early(root)
    except Exception:  # the first visitor opens it then, and sees the error
        log.exception("could not open the DuckDB connection")
    if stop.wait(FIRST_BUILD_AFTER_S):
        return
    while True:
        try:
            _build(root, grace)
            now = rollups.signature(root)
            if now != seen:
                data.renew(root)
                seen = now
        except Exception:  # a failed round (full disk, read-only volume) must not end the next ones
            log.exception("rollup upkeep failed; the Overview reads the raw trail meanwhile")
        if stop.wait(INTERVAL_S):
            return


def _build(root: str, grace: timedelta) -> None:
    built = rollups.build(root, now=datetime.now(timezone.utc), grace=grace, wait=False)
    if built is None or not built.changed:
        return
    for path in built.skipped_files:
        log.warning("unreadable audit file: its hour is read raw", extra={"event": "rollup_skipped", "path": path})
    log.info("rollups built", extra={"event": "rollups_built", "hours": built.hours_built,
                                     "days": len(built.days_written), "seconds": built.seconds})


def start(root: str, grace: timedelta) -> tuple[threading.Thread, threading.Event]:
    """Run :func:`run` in a daemon thread; setting the returned event stops it."""
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(root, grace, stop), name="dashboard-upkeep", daemon=True)
    thread.start()
    return thread, stop
