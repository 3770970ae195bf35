"""Connections to the PostgreSQL registry: how they are opened, how their failures read, the
change notifications, and the grouping of concurrent calls into one round trip per loop turn.

Every failure to reach the database (refused, lost, killed, timed out) becomes
:class:`gateway.registry.RegistryUnavailable`, whose message names the server but never the
password a URL may carry.
"""
from __future__ import annotations

import asyncio
import threading
from contextlib import asynccontextmanager, contextmanager
from typing import Any, AsyncIterator, Awaitable, Callable, Generic, Iterator, Sequence, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from gateway.registry import RegistryBusy, RegistryUnavailable

CHANNEL = "portcullis_changes"  # NOTIFY channel: the payload says what changed
LICENSES, POLICY, CALLERS = "licenses", "policy", "callers"  # its payloads
# tcp_user_timeout bounds a query sent into a partitioned network (keepalives only probe idle
# sockets); read-write: after a failover a connection never lands on a read-only replica.
_CONNECT = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
            "keepalives_count": 3, "tcp_user_timeout": 5000, "target_session_attrs": "read-write",
            "application_name": "portcullis"}
_ACQUIRE_TIMEOUT_S = 2.0  # a decision waits no longer than this for a connection: then 503
# The hot path's sessions: a license lock awaited longer than this is a 503, not a pile-up; a
# transaction left idle by a vanished host is ended by the server, releasing its locks.
_HOT_OPTIONS = "-c lock_timeout=5s -c idle_in_transaction_session_timeout=30s"


def _parses(url: str) -> bool:
    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return False
    return True


def where(url: str) -> str:
    """The server and database a URL names, for messages: never its password."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(an invalid registry_url)"
    return f"postgresql://{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


_BUSY = (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected, TimeoutError)
# A demoted primary (failover) refuses writes; a transaction the server ended frees its locks.
_GONE = (psycopg.OperationalError, psycopg.InterfaceError, psycopg.errors.ReadOnlySqlTransaction,
         psycopg.errors.IdleInTransactionSessionTimeout)


@contextmanager
def unavailable(url: str) -> Iterator[None]:
    """Turn a failure to reach the database into :class:`RegistryUnavailable`, one that says it
    answered too slowly into :class:`RegistryBusy`. A URL libpq cannot parse is refused without
    quoting it: it may hold a password."""
    try:
        yield
    except psycopg.ProgrammingError:
        if _parses(url):  # a fault of ours, not of the URL
            raise
        raise RegistryUnavailable("registry_url is not a valid PostgreSQL URL (not shown: it may hold a "
                                  "password)") from None
    except _BUSY as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RegistryBusy(f"the registry {where(url)} is busy: {reason}") from exc
    except _GONE as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RegistryUnavailable(f"the registry {where(url)} cannot be reached: {reason}") from exc


def connect(url: str) -> psycopg.Connection:
    """A connection for the sync methods (CLI, admin): autocommit, transactions explicit."""
    with unavailable(url):
        return psycopg.connect(url, autocommit=True, **_CONNECT)


class SyncSession:
    """One sync connection, opened on first use and again after it broke. Threads take turns:
    one's transaction never takes in another's statements."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection | None = None
        self._turn = threading.RLock()

    @contextmanager
    def __call__(self) -> Iterator[psycopg.Connection]:
        with self._turn, unavailable(self.url):
            if self._conn is None or self._conn.closed:
                self._conn = connect(self.url)
            try:
                yield self._conn
            except (psycopg.OperationalError, psycopg.InterfaceError):
                self._conn.close()
                self._conn = None
                raise

    def close(self) -> None:
        with self._turn:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class AsyncSession:
    """Async connections kept for reuse, at most ``max_size`` in use at once.

    No background task of its own (a pool's workers would outlive the loop that started them);
    idle connections are reused, a broken one is dropped with every idle one (a server restart
    breaks them all), and a new loop starts afresh. Waiting longer than
    ``_ACQUIRE_TIMEOUT_S`` for a free connection is a :class:`TimeoutError`.
    """

    def __init__(self, url: str, max_size: int) -> None:
        self.url = url
        self._max_size = max_size
        self._idle: list[psycopg.AsyncConnection] = []
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._drop_idle()
            self._loop, self._slots = loop, asyncio.Semaphore(self._max_size)
        async with asyncio.timeout(_ACQUIRE_TIMEOUT_S):
            await self._slots.acquire()
        try:
            conn = self._idle.pop() if self._idle else await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, options=_HOT_OPTIONS, **_CONNECT)
            try:
                yield conn
            finally:
                if conn.closed or conn.broken or conn.info.transaction_status != TransactionStatus.IDLE:
                    await conn.close()
                    self._drop_idle()
                else:
                    self._idle.append(conn)
        finally:
            self._slots.release()

    def _drop_idle(self) -> None:
        for conn in self._idle:
            conn.pgconn.finish()  # closes the socket, needing no loop
        self._idle.clear()

    def close(self) -> None:
        """Close the idle connections (those in use close as their work ends)."""
        self._drop_idle()


def notify(conn: psycopg.Connection, what: str) -> None:
    """Tell every listening host that ``what`` changed, when (and only if) the transaction commits."""
    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, what))


async def changes(url: str) -> AsyncIterator[str]:
    """The payloads of change notifications (:data:`LICENSES`, :data:`POLICY`, :data:`CALLERS`)
    as they arrive; raises :class:`RegistryUnavailable` when the connection is lost (listen again
    and poll the revisions once, as a notification may have been missed meanwhile)."""
    with unavailable(url):
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True, **_CONNECT)
        async with conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            async for note in conn.notifies():
                yield note.payload


T = TypeVar("T")
R = TypeVar("R")


class TurnBatcher(Generic[T, R]):
    """Groups the calls made during one event-loop turn into one ``run`` (one transaction, one
    round trip group), flushed by ``loop.call_soon``.

    Each call submits a group of items; ``run`` gets every group of the turn, in call order, and
    returns per group its results or the exception that group alone raised. If ``run`` itself
    fails (the database is unreachable), every call of the turn raises that.
    """

    def __init__(self, run: Callable[[list[Sequence[T]]], Awaitable[list[list[R] | BaseException]]]) -> None:
        self._run = run
        self._pending: list[tuple[Sequence[T], asyncio.Future]] = []
        self._tasks: set[asyncio.Task] = set()
        self.flushes = 0  # runs started: with N calls in one turn, one

    async def submit(self, items: Sequence[T]) -> list[R]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((items, future))
        return await future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        self.flushes += 1
        task = asyncio.ensure_future(self._settle(pending))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settle(self, pending: list[tuple[Sequence[T], asyncio.Future]]) -> None:
        try:
            results: list[Any] = await self._run([items for items, _ in pending])
        except asyncio.CancelledError:
            for _, future in pending:
                future.cancel()
            raise
        except Exception as exc:  # handed to every caller of the turn
            results = [exc] * len(pending)
        for (_, future), result in zip(pending, results):
            if future.done():
                continue  # the caller went away; what it asked for happened (or not) all the same
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
