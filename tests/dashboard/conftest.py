"""Dashboard fixtures: a small synthetic audit history (real Parquet, laid out as the gateway
writes it) and an empty data directory, each shared by the module's tests."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from analytics.synth import generate

# The history ends at the start of the current hour, so "the last 7 days" is full of records.
HISTORY = dict(days=10, rows=20_000, licenses=60, seed=11)


@pytest.fixture(scope="session")
def history(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dashboard") / "data"
    generate(root, end=datetime.now(timezone.utc), **HISTORY)
    return root


@pytest.fixture(scope="session")
def empty_data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dashboard-empty") / "data"
