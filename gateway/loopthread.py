"""A private event loop on a daemon thread: how the synchronous APIs reuse the async ones.

``SyncPortClient`` and ``Enforcer`` keep one implementation (async) and run it here, so a plain
Python program never needs its own loop and the logic has no second, blocking copy. Everything
submitted runs on this one thread, in order of submission.
"""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any, Awaitable, Coroutine, TypeVar

T = TypeVar("T")


class LoopThread:
    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the private loop and wait for it (never call this from that loop)."""
        return self.submit(coro).result()

    def wrap(self, coro: Coroutine[Any, Any, T]) -> Awaitable[T]:
        """Await ``coro`` from another event loop while it runs on the private one."""
        return asyncio.wrap_future(self.submit(coro))

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()
