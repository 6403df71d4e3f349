"""Load shapes: closed-loop concurrency and open-loop Poisson/gamma arrivals, one level after another."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
import psutil

from garrison.bench.client import RequestRecord, StreamClient
from garrison.bench.config import BenchConfig, Level
from garrison.bench.prompts import PromptSource, load_dataset

LAG_PROBE_S = 0.01
SATURATED_CPU_PERCENT = 80.0


def arrival_offsets(rate: float, burstiness: float, seed: int) -> Iterator[float]:
    """Endless send times (s from the level start): gamma gaps of mean 1/rate; burstiness 1 is Poisson."""
    rng = np.random.default_rng(seed)
    if math.isinf(rate):
        yield from itertools.repeat(0.0)
        return
    clock = 0.0
    scale = 1.0 / (rate * burstiness)
    while True:
        yield clock
        clock += float(rng.gamma(shape=burstiness, scale=scale))


@dataclass
class LevelRun:
    """The live record of one level: requests so far and the client's own load while it ran."""

    level: Level
    index: int
    records: list[RequestRecord] = field(default_factory=list)
    started_at: float = 0.0
    finished_at: float = 0.0
    started_utc: str = ""
    started: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    lags_ms: list[float] = field(default_factory=list)
    cpu_percent: float | None = None
    system_cpu_percent: float | None = None
    interrupted: bool = False
    abandoned: int = 0

    @property
    def duration_s(self) -> float:
        """Level start -> last completion (or now, while it runs)."""
        end = self.finished_at or time.perf_counter()
        return max(0.0, end - self.started_at) if self.started_at else 0.0

    def client_stats(self) -> dict[str, Any]:
        """The client's CPU share (100 = one core), the machine's, event-loop lag and peak in-flight."""
        lags = np.asarray(self.lags_ms) if self.lags_ms else np.zeros(1)
        return {
            "cpu_percent": self.cpu_percent,
            "system_cpu_percent": self.system_cpu_percent,
            "saturated": self.cpu_percent is not None and self.cpu_percent >= SATURATED_CPU_PERCENT,
            "loop_lag_p99_ms": float(np.percentile(lags, 99)),
            "loop_lag_max_ms": float(lags.max()),
            "peak_in_flight": self.peak_in_flight,
        }


@dataclass
class SweepState:
    """Everything measured so far; filled while the sweep runs, so an interrupted run can still be written."""

    config: BenchConfig
    t0: float = field(default_factory=time.perf_counter)
    started_utc: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    levels: list[LevelRun] = field(default_factory=list)
    interrupted: bool = False
    endpoint: str = ""


class Observer(Protocol):
    """Who is told about progress (the console's progress bar and tables)."""

    def level_started(self, run: LevelRun, total: int | None, duration_s: float | None) -> None:
        """A level (or the warm-up, index -1) begins."""
        ...

    def request_done(self, run: LevelRun, record: RequestRecord) -> None:
        """A request of the level finished, well or not."""
        ...

    def level_finished(self, run: LevelRun) -> None:
        """A level ended (completed or interrupted)."""
        ...


class _CpuMeter:
    def __init__(self) -> None:
        self._process = psutil.Process()
        self._wall = time.perf_counter()
        self._cpu = self._process_cpu()
        self._system = psutil.cpu_times()

    def _process_cpu(self) -> float:
        times = self._process.cpu_times()
        return float(times.user + times.system)

    def stop(self, run: LevelRun) -> None:
        wall = time.perf_counter() - self._wall
        if wall <= 0:
            return
        run.cpu_percent = 100.0 * (self._process_cpu() - self._cpu) / wall
        now = psutil.cpu_times()
        total = sum(now) - sum(self._system)
        if total > 0:
            run.system_cpu_percent = 100.0 * (1.0 - (now.idle - self._system.idle) / total)


async def _watch_loop_lag(run: LevelRun) -> None:
    """Sleep in short steps and record how late each wake-up is: a busy client shows up as lag."""
    while True:
        before = time.perf_counter()
        await asyncio.sleep(LAG_PROBE_S)
        run.lags_ms.append(max(0.0, (time.perf_counter() - before - LAG_PROBE_S) * 1000.0))


class Sweep:
    """Runs the warm-up and every level of a config against one shared streaming client."""

    def __init__(self, config: BenchConfig, state: SweepState, observer: Observer) -> None:
        self.config = config
        self.state = state
        self.observer = observer
        self._dataset = load_dataset(config.dataset) if config.dataset else None

    async def run(self) -> None:
        """Warm up, then run each level in turn; cancellation (Ctrl-C) marks the current level interrupted."""
        async with StreamClient(self.config) as client:
            self.state.endpoint = client.url
            levels = self.config.levels()
            if self.config.warmup:
                warm = LevelRun(level=levels[0], index=-1)
                await self._run_level(client, warm, requests=self.config.warmup, duration_s=None)
            for index, level in enumerate(levels):
                run = LevelRun(level=level, index=index)
                self.state.levels.append(run)
                await self._run_level(client, run, self.config.requests, self.config.duration_s)

    async def _run_level(
        self, client: StreamClient, run: LevelRun, requests: int | None, duration_s: float | None
    ) -> None:
        source = PromptSource(self.config, stream=run.index + 1, dataset=self._dataset)
        self.observer.level_started(run, requests, duration_s)
        meter = _CpuMeter()
        watcher = asyncio.create_task(_watch_loop_lag(run))
        run.started_utc = datetime.now(UTC).isoformat(timespec="seconds")
        run.started_at = time.perf_counter()
        deadline = run.started_at + duration_s if duration_s is not None else math.inf
        try:
            if run.level.mode == "concurrency":
                await self._closed_loop(client, run, source, int(run.level.value), requests, deadline)
            else:
                await self._open_loop(client, run, source, requests, deadline)
        except asyncio.CancelledError:
            run.interrupted = self.state.interrupted = True
            run.abandoned = run.started - len(run.records)
            raise
        finally:
            run.finished_at = time.perf_counter()
            watcher.cancel()
            meter.stop(run)
            self.observer.level_finished(run)

    async def _one(
        self, client: StreamClient, run: LevelRun, source: PromptSource, i: int, at: float
    ) -> None:
        run.started += 1
        run.in_flight += 1
        run.peak_in_flight = max(run.peak_in_flight, run.in_flight)
        try:
            record = await client.send(source.get(i), index=i, scheduled_at=at)
        finally:
            run.in_flight -= 1
        run.records.append(record)
        self.observer.request_done(run, record)

    async def _closed_loop(
        self,
        client: StreamClient,
        run: LevelRun,
        source: PromptSource,
        concurrency: int,
        requests: int | None,
        deadline: float,
    ) -> None:
        """Each of `concurrency` workers sends its next request as soon as its previous one ends."""
        counter = itertools.count()
        limit = requests if requests is not None else math.inf

        async def worker() -> None:
            while True:
                i = next(counter)
                now = time.perf_counter()
                if i >= limit or now >= deadline:
                    return
                await self._one(client, run, source, i, now)

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    async def _open_loop(
        self, client: StreamClient, run: LevelRun, source: PromptSource, requests: int | None, deadline: float
    ) -> None:
        """Send on a precomputed arrival schedule whatever is still running; late sends show as queue wait."""
        offsets = arrival_offsets(
            run.level.value, self.config.burstiness, seed=self.config.seed + run.index + 1
        )
        limit = requests if requests is not None else math.inf
        tasks: set[asyncio.Task[None]] = set()
        try:
            for i, offset in enumerate(offsets):
                at = run.started_at + offset
                if i >= limit or at >= deadline:
                    break
                delay = at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(self._one(client, run, source, i, at))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            raise
