"""Several hosts (SPEC §11): what the shared registry on PostgreSQL costs one gateway worker, and
what two and three gateway processes sharing one PostgreSQL answer together.

First one worker on PostgreSQL against the same worker on SQLite: the same policy, caller scopes,
licenses and request mix, wrk runs alternating between the two (``rounds`` each), medians and their ratio;
then both paced alike (each connection waits so that together they would send half what
PostgreSQL sustained) for a p99 that is not the queue of a saturated worker. Then one, two and three gateway processes ("hosts": separate data
directories with the same ``keys/`` and ``policy.toml``) against one PostgreSQL, the runs again
alternating, each host loaded by its own wrk at the same total number of connections; and once
with plain checks only, to tell the cost of one hot license shared by every host from the rest.

The mix: three checks in four are for a license with a seat limit and a daily quota (each
reads its user's seat and the counter under the license's lock and consumes one unit: a write
per check), one in four for a
plain license (no seats, no quota: only the nonce is shared). Every request carries its own
nonce, recorded in the registry like any other. At the end the audit trails of the PostgreSQL
hosts must hold every answered request, every one allowed, and the quota counter must equal the
metered checks allowed: the registry did the work counted.

PostgreSQL is the machine's server (``PORTCULLIS_BENCH_PG``, default
``postgresql://postgres@127.0.0.1:5432/postgres``); each run creates its own database and drops it.
On two shared cores, extra gateway processes compete with each other, with wrk and with
PostgreSQL for the same CPU: the figures say what one machine does, not what several would.
"""
from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, NamedTuple
from urllib.parse import urlsplit

import duckdb
import psycopg

from bench.http import _free_port, _start_gateway
from bench.load import wrk, write_requests

OUT = Path(__file__).parent / "out" / "hosts"
SERVER = os.environ.get("PORTCULLIS_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
CONNECTIONS = 64
SEATS, USERS = 50, 40  # every user of the metered license finds a seat: all allowed, all written
QUOTA = 100_000_000  # per day: never reached here, every check consumes one unit
# Signed requests per second of a run: well above any rate seen here (SQLite ~7,900), as wrk starts
# again at the first once through, and a repeated nonce is refused (the run's checks then fail).
REQUESTS_PER_S = 15_000

POLICY = f"""\
# The several-hosts benchmark's policy: a metered tier (seats and a daily quota) and a plain one.
seat_ttl_days = 30
[tiers.metered]
features = ["*"]
seats = {SEATS}
quotas = {{ "api.*" = {{ limit = {QUOTA}, period = "day" }} }}

[tiers.plain]
features = ["*"]
"""


@contextmanager
def database() -> Iterator[str]:
    """The URL of a new, empty database on ``SERVER``, dropped (connections and all) on the way out."""
    name = f"portcullis_bench_{secrets.token_hex(6)}"
    with psycopg.connect(SERVER, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlsplit(SERVER)._replace(path=f"/{name}").geturl()
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _portcullis(env: dict, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "gateway", *args, "--json"], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def _env(url: str | None, instance: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PORTCULLIS_REGISTRY_URL"}
    return env | {"PORTCULLIS_INSTANCE": instance} | ({"PORTCULLIS_REGISTRY_URL": url} if url else {})


class Host:
    """One gateway's data directory, its environment and, while it serves, its process."""

    def __init__(self, root: Path, name: str, url: str | None) -> None:
        self.name, self.data, self.env = name, root / name / "data", _env(url, name)
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    def cli(self, *args: str) -> dict:
        return _portcullis(self.env, *args, "--data", str(self.data))

    def start(self) -> None:
        self.proc = _start_gateway(self.data, self.port, env=self.env)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
            self.proc = None


class Tenant(NamedTuple):
    """What the load signs with and asks about in one registry: a caller's key id and secret, and
    license keys by tier."""

    creds: tuple[str, str]
    keys: dict[str, str]


def _provision(host: Host) -> Tenant:
    """``init`` (on PostgreSQL, creating the schema), the bench policy, one caller, two licenses."""
    registry = host.env.get("PORTCULLIS_REGISTRY_URL")
    host.cli("init", *(["--registry-url", registry] if registry else []))
    (host.data / "policy.toml").write_text(POLICY)
    caller = host.cli("caller", "add", "bench", "--rate-limit", "0")
    return Tenant((caller["key_id"], caller["secret"]),
                  {tier: host.cli("license", "issue", "--customer", f"bench-{tier}", "--tier", tier)["key"]
                   for tier in ("metered", "plain")})


def _more_host(first: Host, host: Host) -> None:
    """Another host on the same PostgreSQL: the first one's keys/ and policy.toml, then ``init``
    (callers, licenses and usage are the registry's)."""
    host.data.mkdir(parents=True)
    shutil.copytree(first.data / "keys", host.data / "keys")
    shutil.copy2(first.data / "policy.toml", host.data / "policy.toml")
    host.cli("init", "--registry-url", host.env["PORTCULLIS_REGISTRY_URL"])


def _body(keys: dict[str, str], seed: int, plain_only: bool) -> Callable[[int], bytes]:
    """Three checks in four metered (one unit of api.calls, a user among USERS), one plain; or
    only plain ones."""
    rng = random.Random(seed)

    def body(i: int) -> bytes:
        user = f"u{rng.randrange(USERS)}"
        if plain_only or i % 4 == 3:
            return json.dumps({"license_key": keys["plain"], "feature": "reports.sales", "user_id": user}).encode()
        return json.dumps({"license_key": keys["metered"], "feature": "api.calls", "user_id": user,
                           "quantity": 1}).encode()
    return body


class Load:
    """wrk runs against hosts, each with freshly signed requests (bench.load)."""

    def __init__(self, seconds: int) -> None:
        self.seconds, self.runs = seconds, 0

    def _signed(self, host: Host, tenant: Tenant, plain_only: bool) -> Path:
        self.runs += 1
        requests = OUT / f"requests-{host.name}-{self.runs}.txt"
        write_requests(requests, REQUESTS_PER_S * self.seconds, *tenant.creds,
                       _body(tenant.keys, self.runs, plain_only), "/v1/check")
        return requests

    def run(self, hosts: list[Host], tenant: Tenant, *, connections: int = CONNECTIONS,
            rate: float | None = None, plain_only: bool = False) -> dict:
        """Load ``hosts`` at once (``connections`` in all); ``rate``: requests/s in all, else flat out."""
        each = connections // len(hosts)
        delay_ms = each * len(hosts) / rate * 1000 if rate else 0.0
        files = [self._signed(host, tenant, plain_only) for host in hosts]  # all signed before any load starts
        try:
            with ThreadPoolExecutor(len(hosts)) as pool:
                summaries = list(pool.map(lambda h, f: wrk(
                    f"http://127.0.0.1:{h.port}/v1/check", f, seconds=self.seconds, connections=each,
                    delay_ms=delay_ms, workdir=OUT / h.name), hosts, files))
        finally:
            for f in files:
                f.unlink()
        return {"rps": round(sum(s["rps"] for s in summaries), 1),
                "p99_ms": max(s["p99_ms"] for s in summaries), "p50_ms": max(s["p50_ms"] for s in summaries),
                "requests": sum(s["requests"] for s in summaries), "non2xx": sum(s["non2xx"] for s in summaries),
                "errors": sum(s["errors"] for s in summaries), "hosts": summaries}


def _median(runs: list[dict], field: str) -> float:
    return round(statistics.median(r[field] for r in runs), 3)


def _trail(hosts: list[Host]) -> dict:
    """Decisions in the PostgreSQL hosts' audit trails (written out when each stopped)."""
    globs = ", ".join(f"'{h.data}/audit/date=*/hour=*/*.parquet'" for h in hosts)
    rows = duckdb.connect().execute(
        f"SELECT count(*), count(DISTINCT decision_id), count(*) FILTER (decision <> 'allow'), "
        f"coalesce(sum(quantity) FILTER (decision = 'allow'), 0) "
        f"FROM read_parquet([{globs}], hive_partitioning=true) WHERE endpoint = 'check'").fetchone()
    return {"rows": rows[0], "distinct": rows[1], "not_allowed": rows[2], "units_allowed": int(rows[3])}


def _units_counted(url: str) -> int:
    """Quota units the registry counted, every host's together."""
    with psycopg.connect(url) as conn:
        return int(conn.execute("SELECT coalesce(sum(used), 0) FROM usage").fetchone()[0])


def _measure(load: Load, lite: Host, hosts: list[Host], tenants: dict[str, Tenant], rounds: int) -> dict:
    """Every wrk run of the benchmark, alternating as the module's docstring says."""
    one: dict[str, list[dict]] = {"sqlite": [], "postgresql": []}
    several: dict[int, list[dict]] = {1: [], 2: [], 3: []}
    try:
        lite.start()
        hosts[0].start()
        for _ in range(rounds):
            one["sqlite"].append(load.run([lite], tenants["sqlite"]))
            one["postgresql"].append(load.run([hosts[0]], tenants["postgresql"]))
        moderate = _median(one["postgresql"], "rps") / 2
        at_moderate = {"sqlite": load.run([lite], tenants["sqlite"], connections=16, rate=moderate),
                       "postgresql": load.run([hosts[0]], tenants["postgresql"], connections=16, rate=moderate)}
        lite.stop()
        for host in hosts[1:]:
            host.start()
        for _ in range(rounds):
            for n in several:
                several[n].append(load.run(hosts[:n], tenants["postgresql"]))
        # Once more with the plain license alone: no seat or counter row that every host locks.
        plain = {n: load.run(hosts[:n], tenants["postgresql"], plain_only=True) for n in several}
    finally:
        for host in (lite, *hosts):
            host.stop()
    return {"one_worker": one, "moderate": at_moderate, "hosts": several, "plain": plain}


def run(seconds: int = 8, rounds: int = 3) -> dict:
    if OUT.exists():
        shutil.rmtree(OUT)
    with database() as url:
        lite, hosts = Host(OUT, "sqlite", None), [Host(OUT, f"host{i}", url) for i in (1, 2, 3)]
        tenants = {"postgresql": _provision(hosts[0]), "sqlite": _provision(lite)}
        for host in hosts[1:]:
            _more_host(hosts[0], host)
        runs = _measure(Load(seconds), lite, hosts, tenants, rounds)
        units = _units_counted(url)
    trail = _trail(hosts)
    one, moderate, several, plain = runs["one_worker"], runs["moderate"], runs["hosts"], runs["plain"]
    on_postgresql = [*one["postgresql"], moderate["postgresql"], *plain.values(), *(r for v in several.values() for r in v)]
    everything = [*one["sqlite"], moderate["sqlite"], *on_postgresql]
    answered = sum(r["requests"] for r in on_postgresql)
    sqlite_rps, pg_rps = _median(one["sqlite"], "rps"), _median(one["postgresql"], "rps")
    decisions = {n: _median(v, "rps") for n, v in several.items()}
    return {
        "seconds": seconds, "rounds": rounds, "connections": CONNECTIONS,
        "sqlite_rps": sqlite_rps, "postgresql_rps": pg_rps, "ratio": round(pg_rps / sqlite_rps, 3),
        "sqlite_p99_ms": _median(one["sqlite"], "p99_ms"), "postgresql_p99_ms": _median(one["postgresql"], "p99_ms"),
        "moderate_rps": {k: v["rps"] for k, v in moderate.items()},
        "moderate_p99_ms": {k: v["p99_ms"] for k, v in moderate.items()},
        "decisions_per_s": {str(n): v for n, v in decisions.items()},
        "plain_decisions_per_s": {str(n): r["rps"] for n, r in plain.items()},
        "non2xx": sum(r["non2xx"] + r["errors"] for r in everything),
        "answered_postgresql": answered, "trail": trail, "units_counted": units,
        "registry_checked": (trail["rows"] == trail["distinct"] >= answered and trail["not_allowed"] == 0
                             and units == trail["units_allowed"]),
        "runs": {**runs, "hosts": {str(n): v for n, v in several.items()}, "plain": {str(n): v for n, v in plain.items()}},
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
