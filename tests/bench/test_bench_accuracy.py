"""Accuracy: TTFT and ITL p50 measured by the client match what the scripted server did, within 3 ms."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from garrison.bench.client import RequestRecord
from garrison.bench.config import BenchConfig
from garrison.bench.load import LevelRun
from garrison.bench.run import measure

TOLERANCE_MS = 3.0
SCRIPT = "ttft=300,itl=20,jitter=4,tokens=16"


def server_truth(records: list[dict[str, Any]]) -> tuple[float, float]:
    """TTFT and ITL p50 (ms) from the server's own clock: request received -> first write, write gaps."""
    ttfts = [1000 * (r["writes"][0] - r["received"]) for r in records]
    gaps = [1000 * g for r in records for g in np.diff(r["writes"])]
    return float(np.percentile(ttfts, 50)), float(np.percentile(gaps, 50))


class ResetAfterWarmup:
    """Clears the server's record when the measured level starts, so warm-up requests are not in the truth."""

    def __init__(self, reset: Callable[[], None]) -> None:
        self.reset = reset

    def level_started(self, run: LevelRun, total: int | None, duration_s: float | None) -> None:
        if run.index == 0:
            self.reset()

    def request_done(self, run: LevelRun, record: RequestRecord) -> None:
        pass

    def level_finished(self, run: LevelRun) -> None:
        pass


@pytest.fixture
def small_heap() -> Iterator[None]:
    """The client as `garrison bench` runs it: a process with a small heap. In the suite, this process holds
    every earlier test's objects, and a full collection over them lands inside the measured requests."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("small_heap")
@pytest.mark.parametrize(("concurrency", "requests"), [(1, 6), (32, 64), (64, 128)])
def test_ttft_and_itl_p50_within_3ms_of_truth(
    scripted_server: str,
    reset_truth: Callable[[], None],
    truth: Callable[[], list[dict[str, Any]]],
    concurrency: int,
    requests: int,
) -> None:
    config = BenchConfig(
        url=scripted_server,
        model=SCRIPT,
        concurrency=(concurrency,),
        requests=requests,
        warmup=concurrency,
        input_tokens=64,
        output_tokens=16,
    )
    results = asyncio.run(measure(config, ResetAfterWarmup(reset_truth)))
    summary = results["levels"][0]["summary"]
    true_ttft, true_itl = server_truth(truth())
    print(
        f"\nconcurrency {concurrency}: TTFT p50 {summary['ttft_ms']['p50']:.2f} ms (truth {true_ttft:.2f}), "
        f"ITL p50 {summary['itl_ms']['p50']:.2f} ms (truth {true_itl:.2f}), "
        f"client CPU {summary['client']['cpu_percent']:.0f}%, "
        f"client wait p50 {summary['queue_wait_ms']['p50']:.2f} ms"
    )
    assert summary["completed"] == requests
    assert summary["client"]["peak_in_flight"] == concurrency
    assert abs(summary["ttft_ms"]["p50"] - true_ttft) <= TOLERANCE_MS
    assert abs(summary["itl_ms"]["p50"] - true_itl) <= TOLERANCE_MS
