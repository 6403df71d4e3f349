"""The pipeline's store work off the event loop: worker threads of the service's own, cheap to hand work to.

`anyio.to_thread.run_sync` costs about 130 us a call on this machine (capacity limiter, cancel scopes and
worker bookkeeping); `loop.run_in_executor` about 30 us, but a `ThreadPoolExecutor` costs more CPU under load
(its shared queue and its `concurrent.futures` futures with their conditions and callbacks). Here each call
goes to the most recently idle worker's own queue and its result comes back with one `call_soon_threadsafe`.
A request makes two hops (admission, settlement). The semantics stay anyio's: a call that was started runs
to its end, and a cancelled caller waits for it, so an admission that reserved tokens and wrote its record is
never lost to a client that left meanwhile: its result is returned and the cancellation delivered again.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Loop = asyncio.AbstractEventLoop
_Item = tuple[_Loop, "asyncio.Future[Any]", contextvars.Context, Callable[..., Any], tuple[Any, ...]]


class Offload:
    """Threads for synchronous store work, started as needed (one per concurrent call, at most `max_workers`;
    beyond that calls wait their turn), reused most recent first; `run` awaits one call in one of them.
    `close` lets them go; a later `run` starts new ones."""

    def __init__(self, max_workers: int = 32) -> None:
        self._idle: list[_Worker] = []
        self._waiting: deque[_Item] = deque()  # calls made while max_workers threads were all busy
        self._workers = 0  # live threads of the current generation
        self._max_workers = max_workers
        self._lock = threading.Lock()
        self._generation = 0  # bumped by close: workers of an older generation end

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a worker thread (with this task's context variables); its result or exception.

        A cancellation waits for the call to finish; the call's result is returned and the cancellation is
        delivered again at the caller's next await (what was admitted gets settled, as a cancelled request).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        item: _Item = (loop, future, contextvars.copy_context(), fn, args)
        worker: _Worker | None = None
        with self._lock:
            if self._idle:
                worker = self._idle.pop()
            elif self._workers < self._max_workers:
                self._workers += 1
                worker = _Worker(self, self._generation)
                worker.start()
            else:  # every thread is busy: the next one to finish its call takes this one (under the same lock)
                self._waiting.append(item)
        if worker is not None:
            worker.inbox.put(item)
        cancelled = False
        while True:
            try:
                result = await asyncio.shield(future)
                break
            except asyncio.CancelledError:
                cancelled = True
                if future.done():
                    result = future.result()  # it ended as the cancellation came: its value, or its own error
                    break
        if cancelled:  # the caller gets what the call did (a ticket to settle), and its next await the cancellation
            task = asyncio.current_task()
            if task is not None:
                task.cancel()
        return result

    def _rest(self, worker: _Worker) -> _Item | bool:
        """A worker finished a call: a waiting call to run next, back to the idle list (True), or end (False)."""
        with self._lock:
            if self._waiting:
                return self._waiting.popleft()
            if worker.generation != self._generation:
                return False
            self._idle.append(worker)
            return True

    def close(self) -> None:
        """Let the idle threads go now and busy ones once their call (and any waiting call) ends."""
        with self._lock:
            self._generation += 1
            self._workers = 0
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.inbox.put(None)


class _Worker(threading.Thread):
    def __init__(self, pool: Offload, generation: int) -> None:
        super().__init__(name="garrison-store", daemon=True)
        self.pool, self.generation = pool, generation
        self.inbox: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()

    def run(self) -> None:
        item: _Item | None = self.inbox.get()
        while item is not None:
            loop, future, context, fn, args = item
            try:
                _deliver(loop, _succeed, future, context.run(fn, *args))
            except BaseException as exc:  # noqa: BLE001 - the caller's to raise
                _deliver(loop, _fail, future, exc)
            del item, loop, future, context, fn, args  # no references held while idle
            following = self.pool._rest(self)
            if following is False:
                return
            item = self.inbox.get() if following is True else following


def _deliver(loop: _Loop, how: Callable[..., None], future: asyncio.Future[Any], value: Any) -> None:
    try:
        loop.call_soon_threadsafe(how, future, value)
    except RuntimeError:  # the loop closed meanwhile: nobody waits any more
        pass


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
