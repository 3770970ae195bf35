"""Which host a manifest chain, an audit file or an instance id belongs to.

Several gateway hosts may share one audit directory (SPEC §11). Each names its files after its
instance ids (``<host>-w<N>-<segment>.parquet``, and ``compact-<host>-<hash>.parquet`` after
compaction) and keeps its own manifest chain, ``_manifest/<host>.jsonl``, so that no file and no
lock is ever shared between hosts: file locks are not to be relied upon across the hosts of a
network filesystem.
"""
from __future__ import annotations

import re

CHAINS_DIR = "_manifest"
LEGACY_NAME = "_manifest.jsonl"  # the one chain of a trail written before chains were per host
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_FILE = re.compile(r"(?:compact-(?P<compacted>.+)-[0-9a-f]{16}|(?P<written>.+)-w[0-9]+-[0-9]{8}T[0-9]{12}-[0-9a-f]{6})"
                   r"\.parquet")
_WORKER = re.compile(r"-w[0-9]+$")


def is_host(name: str) -> bool:
    """Whether ``name`` can name a host's chain file."""
    return bool(_HOST.fullmatch(name))


def check_host(host: str) -> str:
    """``host`` if it can name a chain file; else ValueError naming the rule."""
    if not is_host(host):
        raise ValueError(f"host name {host!r} cannot name an audit chain: use letters, digits, '.', '_' "
                         f"and '-' (set `instance`)")
    return host


def host_of_instance(instance: str) -> str:
    """``gw1-w3`` -> ``gw1``: the workers of one host share its chain."""
    return _WORKER.sub("", instance)


def host_of_file(name: str) -> str | None:
    """The host an audit file's name says wrote it (None for a name no gateway gives)."""
    match = _FILE.fullmatch(name)
    return (match.group("compacted") or match.group("written")) if match else None
