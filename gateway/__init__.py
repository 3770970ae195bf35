"""Portcullis: the licensing enforcement gateway (engine, HTTP adapter, registry, audit, CLI, SDK).

The SDK names are exported lazily, so ``import gateway`` stays cheap for a process that needs
only one part (the CLI, a client-only service).
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "Enforcer": "gateway.enforcer",
    "PortClient": "gateway.client",
    "SyncPortClient": "gateway.client",
    "Decision": "gateway.decision",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gateway' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
