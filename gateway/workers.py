"""The processes of ``portcullis serve``: a master that owns the port and supervises N workers.

The master reserves the port (a socket bound with ``SO_REUSEPORT``, never listening: it takes no
connections), then forks the workers; each listens on its own ``SO_REUSEPORT`` socket on that
port and the kernel spreads connections over them by their addresses. (One accept socket shared
by all would be simpler, but whichever worker wakes first takes the connection, so one worker
can take nearly all of them; per-worker sockets share the load evenly.)

Workers share nothing but the registry database (licenses, seats, quotas: check-and-consume is one SQLite transaction, so no
seat or unit is granted twice) and the signals table in it; each has its own instance id
(``<instance>-w<N>``), audit spool and Parquet files.

Signals to the master:

- SIGTERM, SIGINT: stop. The master releases the port and passes SIGTERM on. Each
  worker stops accepting, lets in-flight requests finish (up to ``shutdown_timeout_s``), closes
  its audit sink (everything acknowledged ends up in Parquet) and exits 0. A worker still alive
  after twice that is killed. The master exits 0 when every worker did.
- SIGHUP: every worker reloads ``policy.toml`` (and the callers if they changed, which every
  worker also notices on its own: :mod:`gateway.http.upkeep`). The master bumps the ``policy`` generation;
  each worker reloads, audits it, and keeps its old policy if the new one is refused.

A worker that dies is restarted under the same index (so the same instance id recovers its
spool); one that dies within its first seconds (a broken policy, a locked spool) stops the whole
server with exit status 1, rather than restarting in a loop. Workers die with the master
(``PR_SET_PDEATHSIG``): ``kill -9`` of the master is a crash of the gateway, never orphans that
keep the port and the spools.

Ordering: ``PROMETHEUS_MULTIPROC_DIR`` must be set before prometheus-client is first imported
(it picks its value store at import), so nothing that imports it is imported here at module
level; the application is imported by each worker after the fork.
"""
from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import shutil
import signal
import socket
import sys
import time
from typing import Callable

from gateway import logs
from gateway.config import Settings
from gateway.registry import open_signals
from gateway.registry.signals import POLICY_GENERATION

log = logging.getLogger("portcullis.workers")
BACKLOG = 1024
GC_THRESHOLD = 50_000  # net allocations between generation-0 collections in a worker (see _serve_app)
STARTUP_GRACE_S = 5.0  # a worker dying sooner than this is a configuration error, not a crash
_STOP = {signal.SIGTERM, signal.SIGINT}
_SIGNALS = _STOP | {signal.SIGHUP, signal.SIGCHLD}
_PR_SET_PDEATHSIG = 1


def serve(settings: Settings, announce: Callable[[str], None] = print) -> int:
    """Run the gateway until SIGTERM or SIGINT; returns the exit status. OSError if it cannot bind."""
    _prepare_metrics_dir(settings.run_dir / "metrics")
    reserved = reserve(settings.host, settings.port)
    port = reserved.getsockname()[1]
    scheme = "https" if settings.tls_cert else "http"
    workers = f"{settings.workers} worker{'s' if settings.workers != 1 else ''}"
    announce(f"portcullis listening on {scheme}://{settings.host}:{port} ({workers})")
    return Master(settings.with_(port=port), reserved).run()


def reserve(host: str, port: int) -> socket.socket:
    """Hold the port for this server's workers. A port already in use, by another gateway's
    workers too, is refused like by any server (EADDRINUSE): the first, exclusive bind checks."""
    probe = bind(host, port, reuse_port=False)
    port = probe.getsockname()[1]
    probe.close()
    return bind(host, port)


def bind(host: str, port: int, reuse_port: bool = True) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, int(reuse_port))
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _prepare_metrics_dir(path) -> None:
    """Every worker's metric files go here; files of an earlier run would be summed in, so go."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before the metrics directory was set up")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


class Master:
    def __init__(self, settings: Settings, reserved: socket.socket) -> None:
        self.settings, self.reserved = settings, reserved
        self.children: dict[int, tuple[int, float]] = {}  # pid -> (worker index, started at)
        self.stopping_since: float | None = None
        self.status = 0

    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        for worker in range(self.settings.workers):
            self._spawn(worker)
        while self.children:
            info = signal.sigtimedwait(_SIGNALS, 1.0)
            if info is not None and info.si_signo in _STOP:
                self._stop()
            elif info is not None and info.si_signo == signal.SIGHUP:
                self._reload()
            self._reap()
            if self.stopping_since is not None and time.monotonic() - self.stopping_since > 2 * self._timeout:
                for pid in self.children:
                    log.error("worker did not stop in time, killing it", extra={"event": "worker_killed", "pid": pid})
                    os.kill(pid, signal.SIGKILL)
                self.status = 1
        return self.status

    @property
    def _timeout(self) -> float:
        return self.settings.shutdown_timeout_s

    def _spawn(self, worker: int) -> None:
        master = os.getpid()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                # SIGTERM and SIGINT stay blocked until the worker's loop handles them (a stop
                # that arrives during start-up is then a graceful one); SIGHUP is the master's.
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS - _STOP)
                die_with(master)
                self.reserved.close()
                code = run_worker(self.settings, worker)
            except BaseException as exc:
                log.exception("worker failed: %s", exc, extra={"event": "worker_failed", "worker": worker})
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = (worker, time.monotonic())
        log.info("worker started", extra={"event": "worker_started", "worker": worker, "pid": pid})

    def _stop(self) -> None:
        if self.stopping_since is not None:
            return
        self.stopping_since = time.monotonic()
        log.info("stopping", extra={"event": "stopping", "workers": len(self.children)})
        self.reserved.close()
        for pid in self.children:
            os.kill(pid, signal.SIGTERM)

    def _reload(self) -> None:
        signals = open_signals(self.settings)
        try:
            generation = signals.bump(POLICY_GENERATION)
        finally:
            signals.close()
        log.info("policy reload requested", extra={"event": "policy_reload_requested", "generation": generation})

    def _reap(self) -> None:
        from prometheus_client import multiprocess  # safe here: the environment is set

        while self.children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            worker, started = self.children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            multiprocess.mark_process_dead(pid)
            if self.stopping_since is not None:
                self.status |= int(code != 0)
                log.info("worker stopped", extra={"event": "worker_stopped", "worker": worker, "code": code})
            elif time.monotonic() - started < STARTUP_GRACE_S:
                log.error("worker failed at start, stopping", extra={"event": "worker_start_failed",
                                                                    "worker": worker, "code": code})
                self.status = 1
                self._stop()
            else:
                log.error("worker died, restarting it", extra={"event": "worker_died", "worker": worker, "code": code})
                self._spawn(worker)


def die_with(parent: int, sig: int = signal.SIGKILL) -> None:
    """Have the kernel send ``sig`` to this process when ``parent`` dies (Linux; no-op elsewhere).
    Call it in the child, right after the fork; it holds across ``exec``."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def run_worker(settings: Settings, worker: int) -> int:
    from gateway.http.app import create_app  # after the fork: see the module docstring

    _without_pandas()
    logs.set_context(instance=settings.instance_id(worker))
    with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
        return runner.run(_serve_app(create_app(settings, worker=worker), settings))


class _WithoutPandas:
    """An import finder that refuses pandas (see :func:`_without_pandas`)."""

    @staticmethod
    def find_spec(name: str, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError("a gateway worker does without pandas", name=name)
        return None


def _without_pandas() -> None:
    """Keep pandas out of the worker. pyarrow imports it, where installed, on its first conversion
    of Python objects (to recognise pandas objects among them); a worker hands it none, and the
    import would cost 20-30 MB of the worker's memory budget (SPEC §10) for nothing. pyarrow takes
    a pandas that cannot be imported for one that is not installed. Commands the worker starts
    (the policy impact's replay) are new interpreters, with pandas."""
    if "pandas" not in sys.modules:
        sys.meta_path.insert(0, _WithoutPandas())


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The worker's event loop: uvloop's (libuv, its transports in C: less per request than
    asyncio's selector loop) where it is installed and asked for, else asyncio's own (None)."""
    if name != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:
        log.warning("uvloop is not installed: serving on asyncio's event loop", extra={"event": "no_uvloop"})
        return None
    return uvloop.new_event_loop


async def _serve_app(app, settings: Settings) -> int:
    from aiohttp import web

    from gateway.http.keys import TLS

    # The access logger comes with the app (create_app's handler_args).
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=settings.shutdown_timeout_s,
                           keepalive_timeout=settings.read_timeout_s)  # also bounds an unfinished request head
    await runner.setup()  # the app's resources (registry, audit sink) before the first connection
    # Everything loaded so far (modules, the license index) lives as long as the process: freeze
    # it out of the collector, or every full collection walks 100,000 licenses on the event loop.
    gc.collect()
    gc.freeze()
    # A request frees what it allocates by reference counting; the collector's generation-0 runs
    # (every 700 net allocations by default) walk only what is still alive (caches, queues,
    # tasks in flight) and find nothing to free, yet cost 3-4 % of a request's CPU under load
    # here. Every 50,000 is often enough for the rare cycles.
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    try:
        tls = app.get(TLS)
        sock = bind(settings.host, settings.port)
        sock.listen(BACKLOG)
        await web.SockSite(runner, sock, ssl_context=tls.context if tls else None, backlog=BACKLOG).start()
        # "ready" (the app's resources) comes before the socket: this says connections reach it now.
        log.info("worker listening", extra={"event": "listening", "port": settings.port})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signo in _STOP:
            loop.add_signal_handler(signo, stop.set)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP)
        await stop.wait()
    finally:
        await runner.cleanup()  # stop accepting, drain in-flight requests, then close the audit sink
    return 0
