"""A full disk under the whole trail (spool and Parquet on one real small filesystem): every
answered decision reaches Parquet once space returns, while the writer runs and at a graceful
stop, without a restart; no temp file is left behind."""
from __future__ import annotations

from pathlib import Path

import pytest

from gateway.audit import AuditUnavailable
from gateway.audit.manifest import verify
from tests.audit.conftest import make_record
from tests.conftest import fill, trail_ids, wait_until


def leftovers(disk: Path) -> list[Path]:
    """Spool segments not converted and temp files, anywhere on the disk."""
    return [*disk.rglob("*.seg"), *disk.rglob("*.tmp")]


async def refused_after_filling(sink, disk: Path) -> tuple[list, Path]:
    """Fill the disk; submit until the spool refuses. Returns what was acknowledged, and the ballast."""
    acked = [make_record(i) for i in range(10)]
    await sink.submit(acked)
    ballast = fill(disk)
    with pytest.raises(AuditUnavailable, match="No space left"):
        for i in range(100):  # the segment's last free page may take a few more records
            batch = [make_record(1000 + i)]
            await sink.submit(batch)
            acked += batch
    return acked, ballast


@pytest.mark.parametrize("stop", [False, True], ids=["while-running", "at-stop"])
async def test_a_conversion_that_failed_on_a_full_disk_is_retried(small_disk: Path, make_sink, key, stop) -> None:
    audit = small_disk / "audit"
    sink = make_sink(spool_dir=small_disk / "spool" / "test-w0", audit_dir=audit, rotate_s=3600)
    async with sink:
        acked, ballast = await refused_after_filling(sink, small_disk)
        await wait_until(lambda: sink.conversion_failures >= 1, what="the conversion to fail on the full disk")
        ballast.unlink()
        retry = [make_record(5000)]
        await sink.submit(retry)  # served again: the spool is writable
        acked += retry
        if not stop:
            await wait_until(lambda: len(trail_ids(audit)) == len(acked) - len(retry),
                             what="the failed segment to be converted while running")
    assert sorted(trail_ids(audit)) == sorted(r.decision_id for r in acked)
    assert leftovers(small_disk) == []
    assert verify(audit, key.public_key()).ok


async def test_a_segment_still_unconvertible_at_stop_is_kept_for_the_next_start(small_disk: Path, make_sink,
                                                                               key) -> None:
    audit, spool = small_disk / "audit", small_disk / "spool" / "test-w0"
    async with make_sink(spool_dir=spool, audit_dir=audit, rotate_s=3600) as sink:
        acked, ballast = await refused_after_filling(sink, small_disk)
        await wait_until(lambda: sink.conversion_failures >= 1, what="the conversion to fail on the full disk")
    assert list(spool.glob("*.seg")) and not list(small_disk.rglob("*.tmp")), "kept, and no half-written file"
    ballast.unlink()
    async with make_sink(spool_dir=spool, audit_dir=audit):
        pass  # the next start converts what was left
    assert sorted(trail_ids(audit)) == sorted(r.decision_id for r in acked)
    assert leftovers(small_disk) == []
    assert verify(audit, key.public_key()).ok
