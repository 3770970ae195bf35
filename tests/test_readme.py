"""The README's "Try the port by hand" block, run as a newcomer pastes it: with bash, in an empty
directory, against a real ``portcullis serve``. It must get an ``allow``, show that decision in
``portcullis sql`` within 10 s, stop its gateway, and leave the repository as it was.

Only the environment differs from a newcomer's shell: ``PORTCULLIS_PORT`` and ``PORTCULLIS_URL``
point the block's gateway and client at a free port instead of 8080.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
QUERYABLE_WITHIN_S = 10.0  # issue: a decision must be queryable this soon after it was made


def readme_block(heading: str) -> str:
    """The first ```bash block under ``heading``, verbatim."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split(f"\n{heading}\n", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def dirty_paths() -> set[str]:
    """The repository's paths that differ from the last commit, untracked ones included."""
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    return {line[3:] for line in status.splitlines()}


def newcomer_env(port: int) -> dict[str, str]:
    """This environment without any Portcullis variable, the gateway on ``port``."""
    assert shutil.which("portcullis") and shutil.which("jq"), "scripts/setup installs both"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}
    return env | {"PORTCULLIS_PORT": str(port), "PORTCULLIS_URL": f"http://127.0.0.1:{port}"}


class Lines:
    """A process's output, read as it comes, each line with the moment it arrived."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.seen: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.seen.append((time.monotonic(), line))

    def first(self, pattern: str, proc: subprocess.Popen, timeout: float) -> float:
        """When a line matching ``pattern`` arrived (waiting up to ``timeout`` for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for moment, line in list(self.seen):
                if re.search(pattern, line):
                    return moment
            if proc.poll() is not None and not self._thread.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}:\n{self.text}")

    @property
    def text(self) -> str:
        self._thread.join(timeout=0)
        return "".join(line for _, line in self.seen)


def allowed_in_sql(cwd: Path, env: dict[str, str]) -> bool:
    """Whether ``portcullis sql`` (as the block runs it) sees the block's allowed check."""
    out = subprocess.run(["portcullis", "sql", "--format", "csv", "-c",
                          "SELECT count(*) FROM audit WHERE decision = 'allow' AND feature = 'export'"],
                         cwd=cwd, env=env | {"PORTCULLIS_DATA": "./my-port"}, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[-1] != "0"


def test_try_the_port_by_hand_runs_as_written(tmp_path):
    block = readme_block("## Try the port by hand")
    env, before = newcomer_env(free_port()), dirty_paths()
    proc = subprocess.Popen(["bash", "-e", "-c", block], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        lines = Lines(proc)
        decided = lines.first(r'"decision": "allow"', proc, timeout=120)
        polls = []
        while not polls or not polls[-1][1]:  # every poll that starts in time counts
            started = time.monotonic()
            assert started - decided <= QUERYABLE_WITHIN_S, f"not in `portcullis sql` after {polls}:\n{lines.text}"
            polls.append((round(started - decided, 1), allowed_in_sql(tmp_path, env)))
        assert proc.wait(timeout=120) == 0, lines.text
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    # The block's own query, six seconds after the call, shows the decision too.
    assert re.search(r"billing\s+export\s+allow\s+VALID", lines.text), lines.text
    # It stopped its gateway: nothing of its session is left running.
    leftover = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout
    assert not leftover, f"processes left behind: {leftover}"
    # It wrote only into its own data directory, which the repository ignores.
    assert [p.name for p in tmp_path.iterdir()] == ["my-port"]
    assert subprocess.run(["git", "check-ignore", "-q", "my-port/callers.toml"], cwd=ROOT).returncode == 0
    assert not dirty_paths() - before, f"the block changed {dirty_paths() - before}"
