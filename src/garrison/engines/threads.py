"""Threads per decode step, chosen from measured step times: every core on a quiet machine, one on a busy one.

llama.cpp's CPU backend (an OpenMP build) ends each of the hundreds of ops in a step with a barrier. Its
workers spin while they wait (libgomp's default), which is fastest while every thread has a core of its
own and collapses when a neighbour takes one: a barrier then waits a whole time slice for a descheduled
thread. One thread has no barrier at all. No fixed count wins at every load (benchmarks/results/
cpu_paths.json), so the chooser keeps, per step size, an average of nanoseconds per token for each
candidate count, runs the faster one, and now and then probes the other for a couple of steps. A probe
that loses waits twice as long before the next one (up to `max_probe_every_s`), so a busy machine pays
little for watching the quiet one come back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# One-token steps, 2-3 tokens, 4-7, ... 64 and more: per-token cost depends on the step's size.
_MAX_BUCKET = 7


def bucket(n_tokens: int) -> int:
    """The size class of a step of `n_tokens` tokens (1, 2-3, 4-7, ..., 64+)."""
    return min(max(n_tokens, 1).bit_length(), _MAX_BUCKET)


@dataclass(slots=True)
class _Arm:
    ns_per_token: float | None = None
    sampled_at: float = -math.inf


@dataclass(slots=True)
class _Bucket:
    arms: dict[int, _Arm]
    current: int
    probe_every_s: float
    probing: int | None = None
    probe_left: int = 0
    probe_started_at: float = -math.inf


@dataclass(slots=True)
class ThreadChooser:
    """Picks 1 or `max_threads` threads for each step, from the step times it is told (decode thread only)."""

    max_threads: int
    probe_every_s: float = 1.0
    max_probe_every_s: float = 8.0
    probe_steps: int = 2
    alpha: float = 0.3
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[int, _Bucket] = field(default_factory=dict)
    steps_by_threads: dict[int, int] = field(default_factory=dict)
    last: int = 0

    @property
    def candidates(self) -> tuple[int, ...]:
        return (self.max_threads, 1) if self.max_threads > 1 else (1,)

    def choose(self, n_tokens: int) -> int:
        """Threads for the next step of `n_tokens` tokens."""
        b = self._bucket(n_tokens)
        now = self.clock()
        if b.probing is None:
            unknown = next((n for n in self.candidates if b.arms[n].ns_per_token is None), None)
            other = next((n for n in self.candidates if n != b.current), None)
            if unknown is not None:
                self._start_probe(b, unknown, now)
            elif other is not None and now - b.arms[other].sampled_at >= b.probe_every_s \
                    and now - b.probe_started_at >= b.probe_every_s:
                self._start_probe(b, other, now)
        chosen = b.probing if b.probing is not None else b.current
        self.last = chosen
        return chosen

    def record(self, n_tokens: int, threads: int, ns: int) -> None:
        """The step of `n_tokens` tokens just run with `threads` threads took `ns` nanoseconds."""
        b = self._bucket(n_tokens)
        arm = b.arms.get(threads)
        if arm is None:
            return
        now = self.clock()
        self.steps_by_threads[threads] = self.steps_by_threads.get(threads, 0) + 1
        sample = ns / max(n_tokens, 1)
        stale = now - arm.sampled_at >= b.probe_every_s
        if arm.ns_per_token is None or stale:  # a fresh look replaces an old one
            arm.ns_per_token = sample
        else:
            arm.ns_per_token += self.alpha * (sample - arm.ns_per_token)
        arm.sampled_at = now
        if b.probing == threads:
            b.probe_left -= 1
            if b.probe_left <= 0:
                self._end_probe(b, threads)
        best = min((n for n in self.candidates if b.arms[n].ns_per_token is not None),
                   key=lambda n: b.arms[n].ns_per_token or 0.0)
        if b.probing is None:
            b.current = best

    def pinned(self, threads: int) -> int:
        """A step whose thread count is fixed by the caller (not measured): counted, and returned."""
        self.steps_by_threads[threads] = self.steps_by_threads.get(threads, 0) + 1
        self.last = threads
        return threads

    def state(self) -> dict[str, int]:
        """For metrics: the threads of the last step and steps run with each candidate."""
        return {"threads_last": self.last, "steps_one_thread_total": self.steps_by_threads.get(1, 0),
                "steps_all_threads_total": self.steps_by_threads.get(self.max_threads, 0) if self.max_threads > 1
                else 0}

    def _bucket(self, n_tokens: int) -> _Bucket:
        key = bucket(n_tokens)
        found = self._buckets.get(key)
        if found is None:
            found = self._buckets[key] = _Bucket({n: _Arm() for n in self.candidates}, self.candidates[0],
                                                 self.probe_every_s)
        return found

    def _start_probe(self, b: _Bucket, threads: int, now: float) -> None:
        b.probing, b.probe_left, b.probe_started_at = threads, self.probe_steps, now

    def _end_probe(self, b: _Bucket, threads: int) -> None:
        b.probing = None
        probed, held = b.arms[threads].ns_per_token, b.arms[b.current].ns_per_token
        if threads == b.current or held is None or (probed is not None and probed < held):
            b.probe_every_s = self.probe_every_s  # the other choice won (or nothing to compare): look often
        else:
            b.probe_every_s = min(b.probe_every_s * 2, self.max_probe_every_s)
