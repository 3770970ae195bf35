"""What ``portcullis dashboard`` does in the background: open the DuckDB connection before the
first visitor, then keep the rollups current (``analytics.rollups``), so that the Overview reads
per-hour summaries instead of every record of its window.

A build that changed the rollups renews the connection: the new one reads the new rollups'
extent (``rollups_until``), so its reports read only the hours since from the raw trail.
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone

from analytics import rollups
from dashboard import data

log = logging.getLogger("portcullis.dashboard")
INTERVAL_S = 60.0


def run(root: str, grace: timedelta, stop: threading.Event) -> None:
    """Open the connection, then build the rollups every :data:`INTERVAL_S` until ``stop``."""
    data.open_early(root)
    while True:
        try:
            built = rollups.build(root, now=datetime.now(timezone.utc), grace=grace, wait=False)
        except Exception:  # a failed build (full disk, read-only volume) must not end the next ones
            log.exception("rollup build failed; the Overview reads the raw trail meanwhile")
        else:
            if built is not None and built.changed:
                log.info("rollups built", extra={"event": "rollups_built", "hours": built.hours_built,
                                                 "days": len(built.days_written), "seconds": built.seconds})
                data.renew(root)
        if stop.wait(INTERVAL_S):
            return


def start(root: str, grace: timedelta) -> threading.Event:
    """Run :func:`run` in a daemon thread; setting the returned event stops it."""
    stop = threading.Event()
    threading.Thread(target=run, args=(root, grace, stop), name="dashboard-upkeep", daemon=True).start()
    return stop
