"""Who may read the data directory: its owner only, or with ``data_group_read`` its group too.

The audit trail, its manifest, the snapshots and the rollups carry customer data, so nothing
Portcullis writes is readable by other users. The process umask does it (:func:`apply`, run by
every command as it loads its settings): every file and directory created afterwards, whether
written in place or renamed into place, Parquet, manifest or SQLite's own files, gets its mode
from it, so no writer can forget. ``data_group_read`` turns 0700/0600 into 0750/0640, so a
dashboard running as another user of the group can read the trail. What holds secrets stays
0700/0600 whatever the setting: ``keys/`` and ``tls/`` (``gateway.keyfiles.write_private``) and
the registry database, which holds key hashes (:func:`private_file`; SQLite gives its ``-wal``
and ``-shm`` files the database's mode).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from gateway.config import Settings

PRIVATE_UMASK = 0o077
GROUP_READ_UMASK = 0o027


def apply(settings: Settings) -> None:
    """Set this process's umask from the settings, and the data directory's own mode (0700 or
    0750) if it exists and is ours: a directory made by an older version, 0755, would let anyone
    list it and read the files it holds."""
    umask = GROUP_READ_UMASK if settings.data_group_read else PRIVATE_UMASK
    os.umask(umask)
    try:
        mode = settings.data_dir.stat()
        if mode.st_uid == os.geteuid():  # keeping set-group-id, which hands new files the group
            os.chmod(settings.data_dir, stat.S_IMODE(mode.st_mode) & ~0o777 | 0o777 & ~umask)
    except OSError:  # not there yet (it will be made with the umask), or a read-only volume
        pass


def private_file(path: Path) -> None:
    """Create ``path`` if missing, and make it 0600 whatever the umask (it holds secrets)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
