"""Audit writer benchmark (SPEC §10): records/s into Parquet on one core, and event-loop stalls.

``python -m bench.audit_writer [RECORDS]`` prints one JSON object. The process is pinned to one
CPU, so the commit and converter threads share the core with the event loop, as in a worker.

- ``parquet``: batches of 100 records from 64 concurrent submitters (the batch endpoint), durable
  ack, timed from the first submit until ``close()`` has every record in Parquet.
- ``durable`` / ``buffered``: single-record submits from 256 concurrent submitters (one request,
  one record), to compare the two ack modes and show how many records one fsync covers.

``ack_ms`` gives percentiles of the time a submit takes to return (p100 is the worst).

Before measuring, a short warm-up run does the lazy imports and the start-up heap is frozen
(``gc.freeze()``), as a gateway worker should do once started: otherwise a full collection of
that heap (20+ ms here) is the worst stall, whatever the writer does.

A ticker coroutine sleeps 1 ms at a time while the writer runs and records how late it wakes:
``max_stall_ms`` is the worst such lateness. ``parquet_per_cpu_s`` divides by the CPU time of
all the process's threads, which stays meaningful when other processes share the machine
(wall-clock rates and stalls do not).
"""
from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit import AuditRecord
from gateway.audit.writer import DurableSink, SinkConfig

T0 = 1_767_268_800_000_000  # 2026-01-01T12:00:00Z
POOL = 10_000  # distinct records, reused: building records is the HTTP layer's cost, not the writer's


def _record(i: int) -> AuditRecord:
    decision_id = str(uuid.uuid4())
    return AuditRecord(
        ts=T0 + i * 1000, decision_id=decision_id, request_id=decision_id, instance="bench-w0",
        environment="prod", caller_id=f"svc-{i % 20}", auth_method="hmac", auth_error=None,
        remote_addr=f"10.0.{i % 8}.{i % 250}", endpoint="check", http_status=200,
        decision="alert" if i % 10 == 0 else "allow", reason="EXPIRING_SOON" if i % 10 == 0 else "VALID",
        alerts=["EXPIRING_SOON"] if i % 10 == 0 else [], license_id=f"lic_{i % 500:020d}",
        key_fp=f"{i % 500:016x}", customer=f"customer-{i % 100}", product="analytics-suite",
        tier="pro", user_id=f"u-{i % 3000}", feature="reports.export", quantity=i % 3,
        seats_used=i % 25, seats_limit=25, quota_used=i % 1000, quota_limit=1000,
        expires_at=T0 + 90 * 86_400_000_000, policy_version="a1b2c3d4e5f6", latency_us=40 + i % 60,
        trace_id=None, error=None,
    )


class Ticker:
    """Measures how late a 1 ms sleep wakes up: the event loop's worst stall.

    ``max_own_stall`` counts only the part of a late wake-up during which this process was on
    the CPU (it is pinned to one): the stall it caused itself, whatever else the machine runs.
    """

    def __init__(self) -> None:
        self.max_stall = self.max_own_stall = 0.0
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            started, cpu = time.perf_counter(), time.process_time()
            await asyncio.sleep(0.001)
            late = time.perf_counter() - started - 0.001
            self.max_stall = max(self.max_stall, late)
            self.max_own_stall = max(self.max_own_stall, min(late, time.process_time() - cpu))

    def __enter__(self) -> Ticker:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._task.cancel()


async def _measure(root: Path, pool: list[AuditRecord], records: int, batch: int, submitters: int, ack: str) -> dict:
    config = SinkConfig(spool_dir=root / "spool" / ack, audit_dir=root / "audit", instance=f"bench-{ack}", ack=ack)
    sink = DurableSink(config, Ed25519PrivateKey.generate())
    await sink.start()

    latencies: list[float] = []

    async def submitter(first: int) -> None:
        for i in range(first, records, batch * submitters):
            start, sent = i % POOL, time.perf_counter()
            await sink.submit(pool[start:start + min(batch, records - i)])
            latencies.append(time.perf_counter() - sent)
            await asyncio.sleep(0)  # a request handler yields between requests, even when the ack does not

    with Ticker() as ticker:
        cpu, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(submitter(k * batch) for k in range(submitters)))
        acked = time.perf_counter()
        await sink.close()
        done, cpu = time.perf_counter(), time.process_time() - cpu
    latencies.sort()
    return {
        "records": records, "batch": batch, "submitters": submitters, "ack": ack,
        "acked_per_s": round(records / (acked - started)),
        "parquet_per_s": round(records / (done - started)),
        "parquet_per_cpu_s": round(records / cpu),  # robust to other processes sharing the core
        "ack_ms": {f"p{q}": round(latencies[int(q / 100 * (len(latencies) - 1))] * 1000, 2) for q in (50, 99, 100)},
        "fsyncs": sink.syncs, "records_per_fsync": round(records / max(sink.syncs, 1), 1),
        "max_stall_ms": round(ticker.max_stall * 1000, 2),
        "max_own_stall_ms": round(ticker.max_own_stall * 1000, 2),
        "parquet_files": sink.files_written,
    }


def run(records: int = 500_000) -> dict:
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    pool = [_record(i) for i in range(POOL)]
    try:
        with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
            asyncio.run(_measure(Path(tmp) / "warm-up", pool, 20_000, 100, 8, "durable"))  # lazy imports
            gc.collect()
            gc.freeze()  # as a worker does once started: gen-2 collections then skip the start-up heap
            parquet = asyncio.run(_measure(Path(tmp), pool, records, 100, 64, "durable"))
            single = min(records, 100_000)
            durable = asyncio.run(_measure(Path(tmp), pool, single, 1, 256, "durable"))
            buffered = asyncio.run(_measure(Path(tmp), pool, single, 1, 256, "buffered"))
    finally:
        gc.unfreeze()
        os.sched_setaffinity(0, cpus)
    return {
        "parquet": parquet, "durable": durable, "buffered": buffered,
        "targets": {"parquet_per_s": 200_000, "max_stall_ms": 10.0},
        "meets_targets": parquet["parquet_per_s"] >= 200_000
        and max(r["max_stall_ms"] for r in (parquet, durable, buffered)) <= 10.0,
        "load_average": os.getloadavg()[0],  # other processes on the machine skew wall-clock figures
        "cpus": os.cpu_count(),
    }


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 500_000), indent=2))
