"""DurableSink: the audit trail's production sink (SPEC §5): spool, then Parquet and manifest.

``ack="durable"``: ``submit`` returns once the records are fsync'd in the spool (group commit).
``ack="buffered"``: it returns at once; a crash loses what was not yet fsync'd (at most one
commit, or ``max_buffered`` records when the disk is slow). If the spool cannot be written,
``submit`` raises :class:`AuditUnavailable` and ``healthy()`` is False until a write succeeds
again (tried on every submit and every second); with ``on_failure="allow"`` it returns instead
and the records are counted in ``lost_records``. Records are never dropped silently.

Records are converted to Arrow on the event loop in small callbacks and written by the spool's
commit thread (:mod:`gateway.audit.spool`); rotated segments become Parquet in a converter
thread, and on start the segments an earlier run of this instance left are converted too. In
buffered mode records are converted after ``submit`` returns: do not mutate them afterwards.

Wire it into aiohttp with ``cleanup_ctx``::

    async def audit_ctx(app):
        async with DurableSink.from_settings(settings, worker) as sink:
            app[AUDIT] = sink
            yield
"""
from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit import AuditRecord, AuditUnavailable
from gateway.audit.hosts import host_of_instance
from gateway.audit.manifest import Manifest
from gateway.audit.parquet import convert_segment, make_dirs
from gateway.audit.schema import AUDIT_SCHEMA
from gateway.audit.segment import SpoolError
from gateway.audit.spool import Spool
from gateway.config import Settings
from gateway.keyfiles import audit_key

log = logging.getLogger(__name__)

# A segment whose conversion failed (a full disk, say) stays in the spool and is tried again after
# 1 s, then after twice as long each time up to a minute, at once when the spool recovers from a
# failure, and once more at close: its records reach Parquet without waiting for a restart.
CONVERT_RETRY_S = 1.0
CONVERT_RETRY_MAX_S = 60.0
_RETRY_NOW = (None, True)  # queued when the spool recovers: retry every failed segment now
UNREADABLE = ".unreadable"  # a spool file this version cannot read, kept for inspection
CONVERTER_NICE = 10  # still ~10 % of a saturated core: conversion needs ~1 us per record


@dataclass(frozen=True)
class SinkConfig:
    spool_dir: Path  # this instance's own spool directory
    audit_dir: Path
    instance: str  # unique per writing process: it names the Parquet files; its host names the chain
    ack: str = "durable"
    on_failure: str = "deny"
    rotate_s: float = Settings.audit_rotate_s
    rotate_bytes: int = Settings.audit_rotate_bytes
    commit_interval_ms: float = 0.0  # extra wait before each fsync to gather a larger group
    max_buffered: int = 10_000  # buffered mode: with this many records not yet fsync'd, wait too

    @classmethod
    def from_settings(cls, settings: Settings, worker: int = 0) -> SinkConfig:
        instance = settings.instance_id(worker)
        return cls(spool_dir=settings.spool_dir / instance, audit_dir=settings.audit_dir, instance=instance,
                   ack=settings.audit_ack, on_failure=settings.audit_on_failure,
                   rotate_s=settings.audit_rotate_s, rotate_bytes=settings.audit_rotate_bytes,
                   commit_interval_ms=settings.audit_commit_interval_ms)


class DurableSink:
    """An :class:`gateway.audit.AuditSink`; counters are plain attributes for a metrics adapter."""

    def __init__(self, config: SinkConfig, signing_key: Ed25519PrivateKey) -> None:
        self.config = config
        self._manifest = Manifest(config.audit_dir, signing_key, host_of_instance(config.instance))
        self._segments: queue.Queue[tuple[Path | None, bool] | None] = queue.Queue()  # (segment, replay)
        self._failed: dict[Path, tuple[float, float]] = {}  # converter thread: segment -> (retry at, back-off)
        self._spool = Spool(config.spool_dir, AUDIT_SCHEMA, rotate_s=config.rotate_s,
                            rotate_bytes=config.rotate_bytes, commit_interval_s=config.commit_interval_ms / 1000,
                            on_rotated=lambda segment: self._segments.put((segment, False)), on_lost=self._lost,
                            on_recovered=lambda: self._segments.put(_RETRY_NOW))
        self._converter = threading.Thread(target=self._convert_loop, name=f"audit-convert:{config.instance}",
                                           daemon=True)
        self._lock_fd: int | None = None
        self._running = False
        self.lost_records = 0
        self.files_written = 0
        self.conversion_failures = 0

    @classmethod
    def from_settings(cls, settings: Settings, worker: int = 0) -> DurableSink:
        return cls(SinkConfig.from_settings(settings, worker), audit_key(settings.keys_dir))

    # Counters of the spool, read through so that a metrics adapter sees one object.
    records_written = property(lambda self: self._spool.records_written)
    bytes_written = property(lambda self: self._spool.bytes_written)
    flush_seconds_total = property(lambda self: self._spool.flush_seconds_total)
    syncs = property(lambda self: self._spool.syncs)
    failures = property(lambda self: self._spool.failures, doc="spool writes that failed")
    backlog = property(lambda self: self._segments.qsize() + len(self._failed),
                       doc="segments waiting for conversion, or for another try")

    async def start(self) -> None:
        """Lock this instance's spool, queue the segments left by an earlier run, start the threads."""
        make_dirs(self.config.spool_dir)
        make_dirs(self.config.audit_dir)
        self._lock_fd = os.open(self.config.spool_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise RuntimeError(f"audit spool {self.config.spool_dir} is used by another process: "
                               f"every worker needs its own instance id") from None
        for segment in self._spool.segments():
            self._segments.put((segment, True))
        self._spool.start()
        self._converter.start()
        self._running = True

    async def close(self) -> None:
        """Write out everything submitted, convert it to Parquet, release the spool."""
        if not self._running:
            return
        self._running = False
        await self._spool.close()
        self._segments.put(None)
        await asyncio.to_thread(self._converter.join)
        os.close(self._lock_fd)

    async def __aenter__(self) -> DurableSink:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def healthy(self) -> bool:
        return self._running and self._spool.healthy

    async def submit(self, records: Sequence[AuditRecord]) -> None:
        if not self._running:
            raise AuditUnavailable("the audit sink is not running")
        if not records:
            return
        if (self.config.ack == "buffered" and self._spool.healthy
                and self._spool.pending < self.config.max_buffered):
            self._spool.append(records, wait=False)
            return
        try:
            await self._spool.append(records)
        except OSError as exc:
            if self.config.on_failure != "allow":
                raise AuditUnavailable(f"audit spool cannot be written: {exc}") from exc
            self.lost_records += len(records)

    def _lost(self, count: int, error: Exception) -> None:
        """Buffered records were acknowledged already: a failure can only be counted and logged."""
        self.lost_records += count
        log.error("audit: %d acknowledged (buffered) records were lost: %s", count, error)

    def _convert_loop(self) -> None:
        if sys.platform == "linux":  # there a thread is a task with its own priority
            # Conversion is background work: on a busy core the event loop must get the CPU
            # first, or its requests wait behind compression for a scheduler time slice.
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), CONVERTER_NICE)
            except OSError as exc:
                log.warning("audit: cannot lower the converter thread's priority: %s", exc)
        while True:
            due = min((at for at, _ in self._failed.values()), default=None)
            try:
                item = self._segments.get(timeout=None if due is None else max(0.0, due - time.monotonic()))
            except queue.Empty:
                item = (None, False)  # a retry is due
            if item is None:  # closing, everything queued is converted: a last try for what failed
                for segment in list(self._failed):
                    if not self._convert(segment, replay=True):
                        log.error("audit: spool segment %s stays in the spool until the next start", segment)
                return
            segment, replay = item
            if segment is not None and not self._convert(segment, replay):
                self._failed[segment] = (time.monotonic() + CONVERT_RETRY_S, CONVERT_RETRY_S)
            for segment, (at, delay) in list(self._failed.items()):
                if item is _RETRY_NOW or at <= time.monotonic():
                    if self._convert(segment, replay=True):
                        del self._failed[segment]
                    else:
                        delay = min(2 * delay, CONVERT_RETRY_MAX_S)
                        self._failed[segment] = (time.monotonic() + delay, delay)

    def _convert(self, segment: Path, replay: bool) -> bool:
        """Convert one segment; False if it failed and stays in the spool to be tried again."""
        try:
            self.files_written += len(convert_segment(segment, self.config.audit_dir, self.config.instance,
                                                      self._manifest, replay=replay))
        except SpoolError as exc:  # retrying cannot help: keep it for inspection, out of the way
            self.conversion_failures += 1
            log.error("audit: %s; set aside as %s", exc, segment.with_suffix(UNREADABLE))
            segment.rename(segment.with_suffix(UNREADABLE))
        except Exception:  # the segment stays in the spool; nothing acknowledged is lost
            self.conversion_failures += 1
            log.exception("audit: converting spool segment %s failed; it stays in the spool and is tried again",
                          segment)
            return False
        return True
