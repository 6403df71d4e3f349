"""How many threads llama.cpp gets for a step, from how busy other processes keep this process's CPUs.

llama.cpp's workers are OpenMP threads that spin at every barrier of a step (~900 of them for one token of
the embedded model). When nothing else runs, two spinning threads on 2 cores decode as fast as llama.cpp's
own server; beside one CPU-bound neighbour they wait on each other and collapse to a fraction of one
thread's rate, and sleeping at each barrier instead (`OMP_WAIT_POLICY=PASSIVE`) cuts the quiet rate to a third.
No fixed choice wins at every load (benchmarks/results/cpu_paths.json, docs/engine.md), so the decode
thread asks a `ThreadGovernor` before every step: all the threads while the machine is quiet, half of
them (at least one) while other processes use our CPUs. One thread never reaches a barrier, so OpenMP's
spinning costs nothing then.

The measurement is the kernel's own accounting: the busy time of the CPUs this process may run on
(`/proc/stat`, steal included: a hypervisor's other guests count as neighbours too) minus this process's
own CPU time, over a window of a few hundred milliseconds, read at most once a window at a step boundary
(one small file read; no extra thread). A switch changes no answer: with `engine.batch_invariant` a lone
one-token step never takes the thread-dependent split-KV kernel (scheduler.py), and every other kernel
gives the same bits at any thread count.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection
from pathlib import Path

log = logging.getLogger(__name__)

STAT = Path("/proc/stat")
WINDOW_S = 0.3
# Other processes' use of our CPUs, in cores, at which the governor halves the threads, and below which it
# gives them back (the gap keeps one noisy window from flapping between the two).
BUSY_ABOVE = 0.5
QUIET_BELOW = 0.25
try:
    _CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
except (AttributeError, ValueError, OSError):  # not a POSIX system
    _CLOCK_TICKS = 100


def cpu_busy_seconds(cpus: Collection[int], stat: Path = STAT) -> float | None:
    """Seconds the given CPUs spent not idle since boot (user, nice, system, irq, softirq, steal), or None."""
    try:
        text = stat.read_text()
    except OSError:
        return None
    total: int | None = None
    ticks = 0
    seen = 0
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu"):
            continue
        try:
            if name != "cpu" and int(name[3:]) not in cpus:
                continue
            fields = [int(v) for v in rest.split()]
        except ValueError:
            return None
        if len(fields) < 8:
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
        busy = user + nice + system + irq + softirq + steal
        if name == "cpu":
            total = busy
        else:
            ticks += busy
            seen += 1
    if not seen:  # CPUs numbered apart from the affinity mask (LXCFS' container view): the whole list's line
        return None if total is None else total / _CLOCK_TICKS
    return ticks / _CLOCK_TICKS


def affinity() -> set[int]:
    """The CPUs this process may run on."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


class OtherLoad:
    """How many cores other processes kept busy on our CPUs between two readings of the kernel's counters."""

    def __init__(
        self,
        cpus: Collection[int] | None = None,
        *,
        busy_seconds: Callable[[], float | None] | None = None,
        own_seconds: Callable[[], float] = time.process_time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        chosen = set(cpus) if cpus is not None else affinity()
        self._busy_seconds = busy_seconds or (lambda: cpu_busy_seconds(chosen))
        self._own_seconds, self._clock = own_seconds, clock
        self._at, self._busy, self._own = clock(), self._busy_seconds(), own_seconds()

    @property
    def readable(self) -> bool:
        """Whether the counters could be read at the start (not on a system without /proc/stat)."""
        return self._busy is not None

    def elapsed(self) -> float:
        """Seconds since the last reading."""
        return self._clock() - self._at

    def sample(self) -> float | None:
        """Other processes' cores since the last reading (which this one replaces), or None if unreadable."""
        now, busy, own = self._clock(), self._busy_seconds(), self._own_seconds()
        if busy is None or self._busy is None or now <= self._at:
            return None
        others = max(0.0, (busy - self._busy) - (own - self._own)) / (now - self._at)
        self._at, self._busy, self._own = now, busy, own
        return others


class ThreadGovernor:
    """Chooses `most` or `fewest` threads per step from other processes' measured use of our CPUs.

    Call `threads()` from the one thread that steps llama.cpp; it reads the kernel's counters at most once
    a window. Where they cannot be read (not Linux), it stays at `fewest`: the choice that is never slow.
    """

    def __init__(
        self,
        most: int,
        fewest: int,
        *,
        cpus: Collection[int] | None = None,
        window_s: float = WINDOW_S,
        busy_above: float = BUSY_ABOVE,
        quiet_below: float = QUIET_BELOW,
        busy_seconds: Callable[[], float | None] | None = None,
        own_seconds: Callable[[], float] = time.process_time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= fewest <= most:
            raise ValueError(f"thread counts must satisfy 1 <= fewest <= most, not {fewest}, {most}")
        self.most, self.fewest = most, fewest
        self._window_s, self._busy_above, self._quiet_below = window_s, busy_above, quiet_below
        self._load = OtherLoad(cpus, busy_seconds=busy_seconds, own_seconds=own_seconds, clock=clock)
        self._threads = fewest
        self.others = 0.0  # other processes' use of our CPUs in the last window, in cores
        self.switches = 0
        if not self._load.readable and most > fewest:
            log.info("CPU accounting (/proc/stat) is unreadable: llama.cpp keeps %d thread(s) per step", fewest)

    def settle(self) -> int:
        """Wait out the first window and decide (a server's start-up does this before its first request)."""
        time.sleep(max(0.0, self._window_s - self._load.elapsed()))
        return self.threads()

    def threads(self) -> int:
        """The thread count for the next step."""
        if not self._load.readable or self.most == self.fewest or self._load.elapsed() < self._window_s:
            return self._threads
        others = self._load.sample()
        if others is None:
            return self._threads
        self.others = others
        chosen = self._threads
        if chosen == self.most and others > self._busy_above:
            chosen = self.fewest
        elif chosen == self.fewest and others < self._quiet_below:
            chosen = self.most
        if chosen != self._threads:
            self.switches += 1
            log.debug("llama.cpp threads %d -> %d (other processes use %.2f cores)", self._threads, chosen, others)
            self._threads = chosen
        return chosen
