"""The README's examples run as a newcomer pastes them: with bash, at the root of a fresh clone,
against a real ``portcullis serve``. "Try the port by hand" must get an ``allow`` and show that decision in
``portcullis sql`` within 10 s, and the report commands of "Ask questions of the history" must
answer over its data; the mTLS walkthrough must get an ``allow`` for its client certificate. Each stops its gateway and leaves the repository as it was.

Only the environment differs from a newcomer's shell: ``PORTCULLIS_PORT`` and ``PORTCULLIS_URL``
point the gateway and ``portcullis call`` at a free port instead of 8080 (curl's URL in the mTLS
block names the port itself, so there the port, and only it, is replaced).
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
from tests.pg import fresh_database

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
QUERYABLE_WITHIN_S = 10.0  # a decision must be queryable this soon after it was made
TRACKED_DEFAULTS = ("data", "gateway/defaults")


def readme_block(heading: str) -> str:
    """The first ```bash block under ``heading``, verbatim."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split(f"\n{heading}\n", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def checkout(tmp_path: Path) -> Path:
    """A fresh clone of the repository's last commit, as a newcomer has it (objects shared, so
    it takes a second): other work going on in this checkout cannot show up in its status."""
    clone = tmp_path / "portcullis"
    subprocess.run(["git", "clone", "-q", "--shared", str(ROOT), str(clone)], check=True, capture_output=True)
    return clone


def git_status(repo: Path, *paths: str) -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", *paths], cwd=repo,
                          check=True, capture_output=True, text=True).stdout


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
        return "".join(line for _, line in self.seen)


def allowed_in_sql(cwd: Path, env: dict[str, str]) -> bool:
    """Whether ``portcullis sql`` (as the block runs it) sees the block's allowed check."""
    out = subprocess.run(["portcullis", "sql", "--format", "csv", "-c",
                          "SELECT count(*) FROM audit WHERE decision = 'allow' AND feature = 'export'"],
                         cwd=cwd, env=env | {"PORTCULLIS_DATA": "./my-port"}, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[-1] != "0"


def start(block: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """``block`` run by bash in a session of its own (so that whatever it leaves can be found)."""
    return subprocess.Popen(["bash", "-e", "-c", block], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def leftovers(proc: subprocess.Popen) -> str:
    """What the block left running (its session's processes), killed now; '' when nothing."""
    left = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout
    if proc.poll() is None or left:
        os.killpg(proc.pid, signal.SIGKILL)
    return left


def assert_left_clean(repo: Path, data: str, defaults_before: str) -> None:
    """The block wrote only into its data directory ``data``, which git ignores, and changed no
    file of the repository (nor the tracked defaults of the installed one)."""
    assert (repo / data / "callers.toml").exists()
    assert git_status(repo) == ""
    assert git_status(ROOT, *TRACKED_DEFAULTS) == defaults_before


def test_try_the_port_by_hand_runs_as_written(tmp_path):
    repo, env, before = checkout(tmp_path), newcomer_env(free_port()), git_status(ROOT, *TRACKED_DEFAULTS)
    proc = start(readme_block("## Try the port by hand"), repo, env)
    try:
        lines = Lines(proc)
        decided = lines.first(r'"decision": "allow"', proc, timeout=120)
        polls = []
        while not polls or not polls[-1][1]:  # every poll that starts in time counts
            started = time.monotonic()
            assert started - decided <= QUERYABLE_WITHIN_S, f"not in `portcullis sql` after {polls}:\n{lines.text}"
            polls.append((round(started - decided, 1), allowed_in_sql(repo, env)))
        assert proc.wait(timeout=120) == 0, lines.text
    finally:
        left = leftovers(proc)
    assert not left, f"the block left processes running: {left}"
    # The block's own query, six seconds after the call, shows the decision too.
    assert re.search(r"billing\s+export\s+allow\s+VALID", lines.text), lines.text
    # The next section's questions, in the same shell: all but the dashboard (a server) and the
    # stock DuckDB CLI (not installed here).
    asked = [line for line in readme_block("## Ask questions of the history").splitlines()
             if line.startswith(("portcullis report", "portcullis sql", "portcullis rollup"))]
    assert len(asked) >= 6
    for line in asked:
        answer = subprocess.run(["bash", "-e", "-c", line], cwd=repo, env=env | {"PORTCULLIS_DATA": "./my-port"},
                                capture_output=True, text=True, timeout=120)
        assert answer.returncode == 0, f"{line}\n{answer.stdout}{answer.stderr}"
    assert_left_clean(repo, "my-port", before)


def test_the_mtls_walkthrough_runs_as_written(tmp_path):
    repo, port, before = checkout(tmp_path), free_port(), git_status(ROOT, *TRACKED_DEFAULTS)
    block = readme_block("## mTLS walkthrough").replace("https://localhost:8080/", f"https://localhost:{port}/")
    proc = start(block, repo, newcomer_env(port))
    try:
        out, _ = proc.communicate(timeout=180)
    finally:
        left = leftovers(proc)
    assert not left, f"the block left processes running: {left}"
    assert proc.returncode == 0, out
    assert '"decision":"allow"' in out, out
    assert_left_clean(repo, "my-port-mtls", before)


def test_several_hosts_run_as_written(tmp_path):
    """The "Several hosts" block against a database of the test's own (its URL, and the two
    ports, are all that is replaced): host b answers "allow" for what host a's CLI made."""
    repo, before = checkout(tmp_path), git_status(ROOT, *TRACKED_DEFAULTS)
    first, second = free_port(), free_port()
    block = readme_block("## Several hosts")
    with fresh_database() as url:
        block = re.sub(r"(export PORTCULLIS_REGISTRY_URL=)\S+", rf"\g<1>{url}", block, count=1)
        block = block.replace("--port 8080", f"--port {first}").replace("--port 8081", f"--port {second}")
        block = block.replace("http://127.0.0.1:8081", f"http://127.0.0.1:{second}")
        proc = start(block, repo, newcomer_env(first))
        try:
            lines = Lines(proc)
            lines.first(r'"decision": "allow"', proc, timeout=120)
            assert proc.wait(timeout=120) == 0, lines.text
        finally:
            left = leftovers(proc)
    assert not left, f"the block left processes running: {left}"
    assert git_status(repo) == "" and git_status(ROOT, *TRACKED_DEFAULTS) == before
