"""PostgreSQL for the tests: a fresh database per test module on the server every machine runs
(127.0.0.1:5432, trust, user postgres), dropped afterwards. Unreachable: skipped on a developer's
machine, a loud failure in CI (``CI=true``): tests of the shared registry never skip there.

A test that stops or kills the database must leave that server up for every other test, so it
starts a :class:`Cluster` of its own instead: the installed server's ``initdb`` and ``pg_ctl``,
run as the ``postgres`` account (PostgreSQL refuses to run as root), on a free port, trust
authentication, removed afterwards."""
from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.conftest import free_port

SERVER = os.environ.get("PORTCULLIS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _url(dbname: str) -> str:
    return urlsplit(SERVER)._replace(path=f"/{dbname}").geturl()


@contextmanager
def fresh_database(prefix: str = "portcullis_test") -> Iterator[str]:
    """The URL of a new, empty database (not migrated), dropped on the way out."""
    try:
        admin = psycopg.connect(SERVER, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is not reachable at {SERVER} (required in CI): {exc}")
        pytest.skip(f"PostgreSQL is not reachable at {SERVER}: {exc}")
    name = f"{prefix}_{secrets.token_hex(6)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield _url(name)
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def truncate(url: str) -> None:
    """Empty every registry table of a migrated database (the schema and its ledger stay)."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations'")]
        conn.execute(f"TRUNCATE {', '.join(tables)}")  # noqa: S608 - the server's own table names
        conn.execute("INSERT INTO meta VALUES ('revision', 0)")


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (/usr/lib/postgresql/*/bin)")
    return found[-1]


def _as_postgres(*argv: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else list(argv)


class Cluster:
    """``start()``, ``stop()``, ``kill()`` and ``start()`` again; ``url`` names its ``postgres`` database."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="portcullis-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        subprocess.run(_as_postgres(_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                                    "--no-sync"), check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(_as_postgres(_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                                    str(self.root / "log"), "-w", "-t", "60", "start"),
                       check=True, capture_output=True, timeout=90)

    def pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend: the database vanishes mid-transaction."""
        pid = self.pid()
        os.kill(pid, signal.SIGKILL)
        subprocess.run(["pkill", "-KILL", "-P", str(pid)], check=False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        (self.data / "postmaster.pid").unlink(missing_ok=True)

    def stop(self) -> None:
        subprocess.run(_as_postgres(_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"),
                       check=False, capture_output=True, timeout=60)

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
