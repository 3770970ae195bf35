"""Synthetic audit history: realistic load, misbehaving callers and licenses in trouble, at scale.

Used by the benchmark, the demo and anyone who wants to try the reports without a live gateway:
``python -m analytics.synth --data DIR --days 30 --rows 10000000``.
"""
from __future__ import annotations

from .history import generate

__all__ = ["generate"]
