"""What ``portcullis serve`` tells the operator when it starts."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("workers, said", [(1, "(1 worker)"), (2, "(2 workers)")])
def test_the_listening_line_counts_workers_in_words(data_dir, spawn, workers, said):
    server = spawn(data_dir.path, "--workers", str(workers))
    first = server.log.read_text().splitlines()[0]
    assert first == f"portcullis listening on {server.url} {said}"
    server.stop()
