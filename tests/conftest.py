"""Shared fixtures: a real data directory (keys, policy, callers, registry) and a signing helper."""
from __future__ import annotations

import asyncio
import inspect
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from gateway import admin
from gateway.auth import signed_headers
from gateway.callers import Caller, add_caller
from gateway.cli.setup import initialise
from gateway.config import Settings, load_settings
from gateway.http import gate as gate_module
from gateway.policy import load_policy
from gateway.registry.sqlite import SqliteStore
from gateway.types import License
from tests.proofs import pytest_collection_modifyitems, pytest_runtest_logreport  # noqa: F401 (hooks)

TEST_POLICY = Path(__file__).parent / "engine" / "policy.toml"
MIDNIGHT_MARGIN_S = 150  # longer than any one test (with its fixtures) runs


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """No test (nor the fixtures set up for it) starts in the last minutes of a UTC day: daily
    quota periods and the audit trail's day partitions would show a test that runs across
    midnight two days, and its exact counts would be wrong (a CI run may well start just before
    midnight). It waits for the new day. Fixtures set up earlier and still in use after midnight
    are not covered: none is known to depend on the date."""
    left_s = 86_400 - time.time() % 86_400  # POSIX days are 86,400 s long
    if left_s < MIDNIGHT_MARGIN_S:
        with item.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
            item.config.get_terminal_writer().line(f"\nwaiting {left_s:.0f} s for UTC midnight to pass")
        time.sleep(left_s + 1)


@dataclass(frozen=True)
class Credentials:
    key_id: str
    secret: str

    def headers(self, method: str, path: str, body: bytes = b"", now: float | None = None) -> dict[str, str]:
        return signed_headers(self.key_id, self.secret, method, path, body, time.time() if now is None else now)


@dataclass
class DataDir:
    """A ready data directory with three callers and helpers to issue licenses."""

    settings: Settings
    service: Credentials
    admin: Credentials
    narrow: Credentials

    @property
    def path(self) -> Path:
        return self.settings.data_dir

    def issue(self, **fields) -> admin.Issued:
        fields.setdefault("customer", "acme")
        fields.setdefault("tier", "basic")
        fields.setdefault("product", "suite")
        fields.setdefault("expires_at", datetime.now(timezone.utc) + timedelta(days=365))
        with self.store() as store:
            return admin.issue(store, load_policy(self.settings.policy_path), **fields)

    def seal(self, lic: License, recipient: str | None = None) -> str:
        """A sealed bundle of ``lic`` as this registry holds it, as ``portcullis license seal`` makes."""
        with self.store() as store:
            return admin.seal_license(self.settings, store, lic.license_id, recipient)

    @contextmanager
    def store(self) -> Iterator[SqliteStore]:
        store = SqliteStore(self.settings.db_path)
        try:
            yield store
        finally:
            store.close()


def make_data_dir(root: Path, **overrides) -> DataDir:
    settings = load_settings(root, env={}, **overrides)
    initialise(settings)
    shutil.copy(TEST_POLICY, settings.policy_path)
    creds = {}
    for name, caller in {
        "service": Caller("service"),
        "admin": Caller("admin", admin=True),
        "narrow": Caller("narrow", features=("view",), products=("suite",), environments=("prod",)),
    }.items():
        key_id, secret = add_caller(settings.callers_path, settings.keys_dir, caller)
        creds[name] = Credentials(key_id, secret)
    return DataDir(settings, **creds)


@pytest.fixture
def data_dir(tmp_path) -> DataDir:
    return make_data_dir(tmp_path / "data", environment="prod")


def body_of(obj) -> bytes:
    return json.dumps(obj).encode()


class _StoppedClock:
    """The ``time`` module with its clocks stopped (the token buckets run on ``monotonic()``,
    signed timestamps are checked against ``time()``), so no token drips back in mid-test."""

    def __init__(self) -> None:
        self.now, self.tick = time.time(), time.monotonic()

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.tick

    def __getattr__(self, name: str):
        return getattr(time, name)


@pytest.fixture
def stopped_clock(monkeypatch) -> None:
    """Stop the clocks the gateway's rate limits read: a test's requests all fall in one instant."""
    monkeypatch.setattr(gate_module, "time", _StoppedClock())


def portcullis(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real command (``python -m gateway``) as an operator would: what a failure prints
    on the terminal. (Click's test runner catches exceptions, so a traceback never shows there.)"""
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A real ``portcullis serve`` process on a free port, stopped (or killed) by the test."""

    def __init__(self, data: Path, *args: str, env: dict | None = None, tls_ca: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"{'https' if tls_ca else 'http'}://127.0.0.1:{self.port}"
        self.tls = None
        if tls_ca:  # a certificate for a service name, reached on 127.0.0.1: check the chain, not the name
            self.tls = ssl.create_default_context(cafile=tls_ca)
            self.tls.check_hostname = False
        self.log = data.parent / f"serve-{self.port}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--data", str(data), "--port", str(self.port), *args],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self.wait_ready()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log.read_text()}")
            try:
                if self.get("/readyz", timeout=1)["status"] == "ready":
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"gateway not ready: {self.log.read_text()}")

    def get(self, path: str, timeout: float = 5.0) -> dict:
        """GET a JSON document from the gateway (its own TLS trust when it serves HTTPS)."""
        with urllib.request.urlopen(self.url + path, timeout=timeout, context=self.tls) as response:
            return json.loads(response.read())

    def stop(self, sig: int | None = None, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGTERM)
        return self.proc.wait(timeout)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem (tmpfs), to be filled up for real: needs root (here and in CI)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                            capture_output=True, check=False)
    if result.returncode:
        pytest.skip(f"a small tmpfs cannot be mounted here: {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


async def wait_until(condition, timeout: float = 30.0, what: str = "the condition") -> None:
    """Poll ``condition`` (a function, or a coroutine function) until it is true. The deadline is
    generous: it only bounds a failure, a passing test does not wait for it."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.05)


def trail_ids(audit_dir: Path) -> list[str]:
    """The decision ids in the Parquet audit trail under ``audit_dir``, as DuckDB reads them."""
    if not list(audit_dir.glob("date=*/hour=*/*.parquet")):
        return []
    return [row[0] for row in duckdb.sql(
        f"SELECT decision_id FROM read_parquet('{audit_dir}/date=*/hour=*/*.parquet', hive_partitioning=true)"
    ).fetchall()]


def fill(directory: Path) -> Path:
    """Write a ballast file in ``directory`` until its filesystem is full (ENOSPC); returns it."""
    ballast = directory / "ballast"
    with open(ballast, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return ballast


@pytest.fixture
def spawn(tmp_path):
    """Start gateways as real processes; whatever a test leaves running is killed."""
    started: list[ServerProcess] = []

    def start(data: Path, *args: str, **kwargs) -> ServerProcess:
        server = ServerProcess(data, *args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
