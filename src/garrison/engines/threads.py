"""Threads per decode step, chosen from measured step times: every core on a quiet machine, one on a busy one.

llama.cpp's CPU backend (an OpenMP build) ends each of the hundreds of ops in a step with a barrier. Its
workers spin while they wait (libgomp's default), which is fastest while every thread has a core of its
own and collapses when a neighbour takes one: a barrier then waits a whole time slice for a descheduled
thread. One thread has no barrier at all. No fixed count wins at every load (benchmarks/results/
cpu_paths.json), so the chooser keeps, per step size, an average of nanoseconds per token for each
candidate count, runs the faster one, and now and then probes the other for a few steps (their median
counts, so one preempted step does not decide). Holding one thread, a probe that loses waits twice as
long before the next one (up to `max_probe_every_s`), so a busy machine pays little for watching the quiet
one come back; holding every core, one thread is looked at every `max_probe_every_s`, since a neighbour
arriving slows the held choice past the other's estimate, which switches at the next step anyway. A
step size seen for the first time follows the nearest size already measured and is probed on the normal
schedule, so a new prompt length does not pay for exploring from scratch.
"""

from __future__ import annotations

import math
import statistics
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
    created_at: float
    probing: int | None = None
    probe_left: int = 0
    probe_started_at: float = -math.inf
    probe_samples: list[float] = field(default_factory=list)


@dataclass(slots=True)
class ThreadChooser:
    """Picks 1 or `max_threads` threads for each step, from the step times it is told (decode thread only)."""

    max_threads: int
    probe_every_s: float = 1.0
    max_probe_every_s: float = 8.0
    probe_steps: int = 3
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
        now = self.clock()
        b = self._bucket(n_tokens, now)
        if b.probing is None:
            other = next((n for n in self.candidates if n != b.current), None)
            if b.arms[b.current].ns_per_token is None and not self._measured(b):
                self._start_probe(b, b.current, now)  # nothing measured anywhere yet: look at both now
            elif other is not None and b.arms[other].ns_per_token is None and not self._measured(b):
                self._start_probe(b, other, now)
            elif other is not None and now - max(b.arms[other].sampled_at, b.created_at) >= self._wait(b) \
                    and now - b.probe_started_at >= self._wait(b):
                self._start_probe(b, other, now)
        chosen = b.probing if b.probing is not None else b.current
        self.last = chosen
        return chosen

    def record(self, n_tokens: int, threads: int, ns: int) -> None:
        """The step of `n_tokens` tokens just run with `threads` threads took `ns` nanoseconds."""
        now = self.clock()
        b = self._bucket(n_tokens, now)
        arm = b.arms.get(threads)
        if arm is None:
            return
        self.steps_by_threads[threads] = self.steps_by_threads.get(threads, 0) + 1
        sample = ns / max(n_tokens, 1)
        if b.probing == threads:
            b.probe_samples.append(sample)
            arm.sampled_at = now
            b.probe_left -= 1
            if b.probe_left <= 0:  # a probe's median replaces what was known of that choice
                arm.ns_per_token = statistics.median(b.probe_samples)
                self._end_probe(b, threads)
                self._settle(b)
            return
        stale = now - arm.sampled_at >= b.probe_every_s
        if arm.ns_per_token is None or stale:  # a fresh look replaces an old one
            arm.ns_per_token = sample
        else:
            arm.ns_per_token += self.alpha * (sample - arm.ns_per_token)
        arm.sampled_at = now
        self._settle(b)

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

    def _bucket(self, n_tokens: int, now: float) -> _Bucket:
        key = bucket(n_tokens)
        found = self._buckets.get(key)
        if found is None:
            found = self._buckets[key] = _Bucket({n: _Arm() for n in self.candidates}, self._nearest_best(key),
                                                 self.probe_every_s, now)
        return found

    def _nearest_best(self, key: int) -> int:
        """The faster choice of the nearest step size with both choices measured (all cores if none)."""
        known = [(abs(k - key), k) for k, b in self._buckets.items() if self._complete(b)]
        if not known:
            return self.candidates[0]
        arms = self._buckets[min(known)[1]].arms
        return min(self.candidates, key=lambda n: arms[n].ns_per_token or 0.0)

    def _complete(self, b: _Bucket) -> bool:
        return all(b.arms[n].ns_per_token is not None for n in self.candidates)

    def _measured(self, b: _Bucket) -> bool:
        """Whether some other step size has both choices measured (this one can follow it meanwhile)."""
        return any(other is not b and self._complete(other) for other in self._buckets.values())

    def _settle(self, b: _Bucket) -> None:
        """Hold the faster choice once both are measured (a probe in progress finishes first)."""
        if b.probing is None and self._complete(b):
            b.current = min(self.candidates, key=lambda n: b.arms[n].ns_per_token or 0.0)

    def _wait(self, b: _Bucket) -> float:
        """Seconds between probes: backing off while one thread is held; `max_probe_every_s` while every core
        is, since a neighbour arriving slows the held choice past the other's estimate and that switches at once
        (and a probe of one thread is a slow step someone waits for)."""
        return b.probe_every_s if b.current == 1 else self.max_probe_every_s

    def _start_probe(self, b: _Bucket, threads: int, now: float) -> None:
        b.probing, b.probe_left, b.probe_started_at = threads, self.probe_steps, now
        b.probe_samples = []

    def _end_probe(self, b: _Bucket, threads: int) -> None:
        b.probing = None
        probed, held = b.arms[threads].ns_per_token, b.arms[b.current].ns_per_token
        if threads == b.current or held is None or (probed is not None and probed < held):
            b.probe_every_s = self.probe_every_s  # the other choice won (or nothing to compare): look often
        else:
            b.probe_every_s = min(b.probe_every_s * 2, self.max_probe_every_s)
