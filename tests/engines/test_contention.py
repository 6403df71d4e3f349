"""The thread governor: llama.cpp's thread count per step follows other processes' measured use of our CPUs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from garrison.engines import contention
from garrison.engines.contention import ThreadGovernor, cpu_busy_seconds


class Counters:
    """Scripted kernel counters: the machine's busy seconds, this process's CPU seconds and the clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self.busy = 0.0
        self.own = 0.0
        self.reads = 0

    def busy_seconds(self) -> float:
        self.reads += 1
        return self.busy

    def advance(self, seconds: float, *, ours: float, others: float) -> None:
        """`seconds` pass while this process uses `ours` cores and other processes `others` cores."""
        self.now += seconds
        self.own += ours * seconds
        self.busy += (ours + others) * seconds

    def governor(self, most: int = 2, fewest: int = 1) -> ThreadGovernor:
        return ThreadGovernor(most, fewest, window_s=0.3, busy_seconds=self.busy_seconds,
                              own_seconds=lambda: self.own, clock=lambda: self.now)


def test_all_threads_while_quiet_half_while_a_neighbour_works_with_hysteresis() -> None:
    c = Counters()
    governor = c.governor(most=4, fewest=2)
    assert governor.threads() == 2  # nothing measured yet: the choice that is never slow
    c.advance(0.5, ours=1.0, others=0.1)
    assert governor.threads() == 4
    assert governor.others == pytest.approx(0.1)
    c.advance(0.3, ours=2.0, others=0.7)  # a neighbour takes a core's share while our threads spin
    assert governor.threads() == 2
    c.advance(0.3, ours=1.0, others=0.4)  # between the thresholds: no flapping
    assert governor.threads() == 2
    c.advance(0.3, ours=1.0, others=0.1)
    assert governor.threads() == 4
    c.advance(0.3, ours=2.0, others=0.4)
    assert governor.threads() == 4
    assert governor.switches == 3


def test_counters_are_read_at_most_once_a_window() -> None:
    c = Counters()
    governor = c.governor()
    reads = c.reads
    for _ in range(50):
        c.advance(0.001, ours=1.0, others=0.0)
        governor.threads()
    assert c.reads == reads  # 50 ms: still inside the first window
    c.advance(0.3, ours=1.0, others=0.0)
    assert governor.threads() == 2
    assert c.reads == reads + 1


def test_unreadable_accounting_keeps_the_fewest_threads() -> None:
    governor = ThreadGovernor(2, 1, busy_seconds=lambda: None, clock=iter(range(0, 100, 1)).__next__)
    assert [governor.threads() for _ in range(5)] == [1] * 5


def test_a_fixed_range_never_reads_the_counters() -> None:
    c = Counters()
    governor = c.governor(most=2, fewest=2)
    c.advance(1.0, ours=0.0, others=2.0)
    assert governor.threads() == 2 and c.reads == 1  # the reading at construction only


def test_fewest_above_most_is_refused() -> None:
    with pytest.raises(ValueError, match="fewest"):
        ThreadGovernor(1, 2)


def test_proc_stat_counts_only_our_cpus_and_steal(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  900 0 900 9000 0 0 0 0 0 0\n"
        "cpu0 100 10 20 5000 40 1 2 3 0 0\n"
        "cpu1 200 20 40 4000 80 2 4 6 0 0\n"
        "intr 12345\n"
    )
    ticks = contention._CLOCK_TICKS
    assert cpu_busy_seconds({1}, stat) == pytest.approx((200 + 20 + 40 + 2 + 4 + 6) / ticks)
    assert cpu_busy_seconds({0, 1}, stat) == pytest.approx((136 + 272) / ticks)  # idle and iowait left out
    assert cpu_busy_seconds({7}, stat) == pytest.approx(1800 / ticks)  # numbered apart: the aggregate line
    stat.write_text("cpu0 1 2\n")
    assert cpu_busy_seconds({0}, stat) is None  # a layout this code does not know
    assert cpu_busy_seconds({0}, tmp_path / "missing") is None


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="Linux CPU accounting")
def test_a_cpu_bound_neighbour_is_measured_and_halves_the_threads() -> None:
    """With a real CPU-bound process on our CPUs, the kernel's counters show it and the governor backs off."""
    cpus = os.sched_getaffinity(0)
    governor = ThreadGovernor(2, 1, cpus=cpus, window_s=0.2)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        deadline = time.monotonic() + 20
        while governor.others < 0.5:
            assert time.monotonic() < deadline, f"the neighbour never showed: {governor.others:.2f} cores"
            governor.threads()
            time.sleep(0.02)  # polling interval of this loop, not a synchronisation
        assert governor.threads() == 1
    finally:
        hog.kill()
        hog.wait()


def test_a_failing_governor_is_dropped_and_the_decode_loop_goes_on() -> None:
    """An exception while measuring never reaches the decode thread: the loop keeps its thread count."""
    from garrison.engines.scheduler import DecodeLoop

    class Broken:
        def threads(self) -> int:
            raise RuntimeError("counters vanished")

    class Recorder:
        name = "recorder"
        failure = None

        def __init__(self) -> None:
            self.steps = 0
            self.threads_set: list[int] = []

        def has_work(self) -> bool:
            return True

        def set_threads(self, n: int) -> None:
            self.threads_set.append(n)

        def step(self) -> None:
            self.steps += 1

    loop = DecodeLoop(Broken())  # type: ignore[arg-type]
    scheduler = Recorder()
    loop._schedulers.append(scheduler)  # type: ignore[arg-type]
    loop._round([scheduler], {})  # type: ignore[list-item]
    assert loop.governor is None and scheduler.steps == 1 and scheduler.threads_set == []
    loop._round([scheduler], {})  # type: ignore[list-item]
    assert scheduler.steps == 2
