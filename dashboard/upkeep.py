"""What ``portcullis dashboard`` does in the background: keep the rollups current
(``analytics.rollups``), so that the Overview reads per-hour summaries instead of every record of
its window, and have the DuckDB connection open before the first visitor needs it.

The connection is opened first: visitors need it, the rollups can wait a moment (a connection
opened before them only reads more of the raw trail). The Overview's attention list is evaluated
next, and again every round (``dashboard.watch``), so that visitors find it ready. The first build waits
:data:`FIRST_BUILD_AFTER_S`, so that it does not compete for the CPU with the first page views
after a restart, which are the ones someone is waiting for. The connection reads the rollups' coverage
when it opens, so whenever they change on disk (this thread's build, `portcullis rollup`, a
report's), it is renewed within a round.

``rollups/`` is the one thing the dashboard writes. Where the data directory is mounted read-only,
the builds are skipped (said once in the log) and rollups built elsewhere are still picked up.
"""
from __future__ import annotations

import errno
import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from analytics import rollups
from analytics.db import ROLLUPS_DIR
from dashboard import data, watch

log = logging.getLogger("portcullis.dashboard")
INTERVAL_S = 60.0
FIRST_BUILD_AFTER_S = 10.0
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}  # what a read-only mount or folder answers


def run(root: str, grace: timedelta, stop: threading.Event) -> None:
    """Open the connection and evaluate the attention list, then build the rollups every
    :data:`INTERVAL_S` until ``stop``, renewing the connection whenever the rollups on disk changed
    since it opened, and evaluating the attention list again when the last one is a round old."""
    seen = rollups.signature(root)  # before opening: a change in between renews it next round
    try:
        data.open_early(root)
    except Exception:  # the first visitor opens it then, and sees the error
        log.exception("could not open the DuckDB connection")
    evaluated = _evaluate_attention(root)
    if stop.wait(FIRST_BUILD_AFTER_S):
        return
    read_only = False
    while True:
        read_only = _build_round(root, grace, read_only)
        try:  # rollups built elsewhere count too: `portcullis rollup` from cron, for a read-only dashboard
            now = rollups.signature(root)
            if now != seen:
                data.renew(root)
                seen = now
        except Exception:
            log.exception("could not renew the DuckDB connection after the rollups changed")
        if time.monotonic() - evaluated >= INTERVAL_S / 2:  # not again in the first round, which comes soon
            evaluated = _evaluate_attention(root)
        if stop.wait(INTERVAL_S):
            return


def _evaluate_attention(root: str) -> float:
    """The Overview's attention list, evaluated for the visitors to come (``dashboard.watch``);
    returns when it began (``time.monotonic``), failed or not."""
    began = time.monotonic()
    try:
        found = watch.refresh(root)
    except Exception:  # visitors evaluate it themselves meanwhile, and see what is wrong
        log.exception("could not evaluate the attention list")
        return began
    log.info("attention list evaluated", extra={"event": "attention_evaluated", "items": len(found.items),
                                                "seconds": round(time.monotonic() - began, 3)})
    return began


def _build_round(root: str, grace: timedelta, read_only: bool) -> bool:
    """One build; whether ``rollups/`` could not be written. A read-only data directory is how an
    operator may well mount it, so it is said once (and when it changes), not every round; any
    other failure (a full disk) is logged each round, and never ends the next ones."""
    try:
        _build(root, grace)
    except Exception as exc:
        if not (isinstance(exc, OSError) and exc.errno in _READ_ONLY):
            log.exception("rollup upkeep failed; the Overview reads the raw trail meanwhile")
            return read_only
        if not read_only:
            log.warning("cannot write %s (%s): this dashboard builds no rollups; the Overview reads the "
                        "raw trail, and any built by `portcullis rollup` elsewhere",
                        Path(root) / ROLLUPS_DIR, exc.strerror, extra={"event": "rollups_read_only"})
        return True
    if read_only:
        log.info("%s is writable again: this dashboard builds the rollups", Path(root) / ROLLUPS_DIR)
    return False


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
