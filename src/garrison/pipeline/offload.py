"""The pipeline's store work off the event loop: a thread pool of the service's own, cheap to hand work to.

`anyio.to_thread.run_sync` costs about 130 us a call on this machine (its capacity limiter, worker
bookkeeping and wake-ups); `loop.run_in_executor` on a plain pool about 30 us. A request makes two hops
(admission, settlement), so the saving is on every request. The semantics stay anyio's: a call that was
started runs to its end, and a cancelled caller waits for it before the cancellation goes on, so an
admission that reserved tokens and wrote its record is never lost to a client that left meanwhile.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

# Group commit gathers the units of concurrent threads into one fsync: enough threads for the batches to grow.
WORKERS = 32


class Offload:
    """A thread pool for synchronous store work; `run` awaits one call in it. Reopened after `close`."""

    def __init__(self, workers: int = WORKERS) -> None:
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="garrison-store")
                pool = self._pool
        return pool

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a worker thread (with this task's context variables); its result or exception.

        A cancellation waits for the call to finish; the call's result is returned and the cancellation is
        delivered again at the caller's next await (what was admitted gets settled, as a cancelled request).
        """
        context = contextvars.copy_context()
        future = asyncio.get_running_loop().run_in_executor(self._executor(), context.run, fn, *args)
        cancelled = False
        while True:
            try:
                result = await asyncio.shield(future)
                break
            except asyncio.CancelledError:
                if future.cancelled():  # the pool was shut down under it
                    raise
                if future.done():
                    result = future.result()  # it ended as the cancellation came: its value, or its own error
                    cancelled = True
                    break
                cancelled = True
        if cancelled:  # the caller gets what the call did (a ticket to settle), and its next await the cancellation
            task = asyncio.current_task()
            if task is not None:
                task.cancel()
        return result

    def close(self) -> None:
        """Let the threads go once their calls end (the next `run` opens a new pool)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)
