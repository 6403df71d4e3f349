"""The service's store threads: results and errors come back, and a cancelled caller never loses a call's result."""

from __future__ import annotations

import asyncio
import threading

import pytest

from garrison.pipeline.offload import Offload


async def test_results_and_errors_come_back_from_the_worker_thread() -> None:
    offload = Offload()
    loop_thread = threading.get_ident()
    assert await offload.run(lambda a, b: (a + b, threading.get_ident() != loop_thread), 2, 3) == (5, True)

    def fails() -> None:
        raise ValueError("the store said no")

    with pytest.raises(ValueError, match="the store said no"):
        await offload.run(fails)
    assert sorted(await asyncio.gather(*(offload.run(lambda i=i: i * i) for i in range(20)))) == [
        i * i for i in range(20)
    ]
    offload.close()
    assert await offload.run(lambda: "reopened") == "reopened"  # a closed offload starts new threads
    offload.close()


async def test_a_cancelled_caller_waits_for_the_call_and_gets_its_result_before_the_cancellation() -> None:
    offload = Offload()
    loop = asyncio.get_running_loop()
    running = asyncio.Event()
    release = threading.Event()
    finished: list[str] = []
    seen: list[str] = []

    def admission() -> str:
        loop.call_soon_threadsafe(running.set)
        release.wait()
        finished.append("reserved and recorded")
        return "ticket"

    async def caller() -> None:
        seen.append(await offload.run(admission))
        await asyncio.sleep(0)  # the cancellation, delivered again, lands at the next await
        seen.append("ran on uncancelled")

    task = asyncio.create_task(caller())
    await running.wait()
    task.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished == ["reserved and recorded"]
    assert seen == ["ticket"]  # the caller had the ticket to settle, then the cancellation
    offload.close()


async def test_at_most_max_workers_threads_and_calls_beyond_them_wait_their_turn() -> None:
    offload = Offload(max_workers=2)
    release = threading.Event()
    threads: list[int] = []

    def call(i: int) -> int:
        threads.append(threading.get_ident())
        release.wait()
        return i

    calls = [asyncio.create_task(offload.run(call, i)) for i in range(12)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*calls) == list(range(12))  # every call ran, each result to its caller
    assert len(threads) == 12 and len(set(threads)) <= 2
    offload.close()
