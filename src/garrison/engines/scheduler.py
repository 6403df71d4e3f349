"""Continuous batching: one decode thread steps all llama.cpp contexts; sequences join/leave between steps.

Each step of a context builds one `llama_batch`: the next token of every decoding sequence, plus prompt
chunks of newly admitted sequences (oldest first, a bounded number of rows each) up to the step's token
budget, so a long prompt is prefilled over several steps while everyone else keeps streaming. Tokens go
in slot order, which lets llama.cpp put consecutive sequence ids into one pass. After `llama_decode`,
each sequence whose logits were computed samples with its own native sampler chain, and its events go
back to the event loop that asked for them, one hand-off per loop per step.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import llama_cpp

from garrison.domain import FinishReason, GenerationDone, GenerationEvent, Timings, TokenDelta, Usage
from garrison.engines.contention import ThreadGovernor
from garrison.engines.kvcache import Placement, Slot, SlotTable
from garrison.engines.sampling import SamplerChain
from garrison.engines.text import TextStream
from garrison.errors import EngineError, EngineUnavailable, GarrisonError

log = logging.getLogger(__name__)

# ggml's CPU flash attention runs a one-token ubatch of a single stream with 512+ KV cells (n_kv is padded to
# 256) split across threads, each summing a share of the cells; its results differ in the last bits from the
# per-row path every other step takes, so a sequence's tokens would depend on whether it ran alone. A lone
# one-token step past this many cells therefore carries a padding row in a neighbouring free stream (two
# streams take the per-row path), whose cell is dropped after the step. One thread never splits, and neither
# do bf16 keys (`lone_steps_split` False: cpu.key_cache_type), which need no padding.
LONE_STEP_CELLS = 256

Outcome = GenerationEvent | BaseException


@dataclass(eq=False, slots=True)
class Sequence:
    """One generation inside the scheduler: prompt, sampler, progress, and the queue its events go to."""

    request_id: str
    prompt: list[int]
    budget: int
    sampler: SamplerChain
    text: TextStream
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Outcome]
    submitted_ns: int = field(default_factory=time.perf_counter_ns)
    cancelled: bool = False
    finished: bool = False
    slot: Slot | None = None
    cached: int = 0
    n_prompt_done: int = 0  # prompt tokens whose KV is in the slot (cached + prefilled)
    n_generated: int = 0
    next_token: int = -1  # sampled, to be fed in the next step
    pending_tokens: int = 0  # sampled tokens not yet reported in a TokenDelta
    admitted_ns: int = 0
    first_token_ns: int = 0
    outbox: list[Outcome] = field(default_factory=list)
    forks: list[Sequence] = field(default_factory=list)  # n > 1: choices that start from this prompt's KV

    @property
    def decoding(self) -> bool:
        return self.n_prompt_done >= len(self.prompt)


@dataclass(slots=True)
class Counters:
    """Monotonic totals since start, for metrics."""

    requests: int = 0
    tokens_prefilled: int = 0
    tokens_generated: int = 0
    prefix_hits: int = 0
    prefix_tokens: int = 0
    steps: int = 0
    running_peak: int = 0
    step_ns: int = 0  # whole steps on the decode thread
    decode_ns: int = 0  # inside llama_decode
    sample_ns: int = 0  # inside the native samplers
    padded_steps: int = 0  # lone one-token steps given a padding row (LONE_STEP_CELLS)


def _deliver(items: list[tuple[asyncio.Queue[Outcome], list[Outcome]]]) -> None:
    """Runs on the requester's event loop: hand one step's events to their queues."""
    for queue, events in items:
        for event in events:
            queue.put_nowait(event)


class BatchScheduler:
    """Admits, batches, decodes and samples the sequences of one llama.cpp context (decode thread only)."""

    def __init__(
        self,
        *,
        ctx: Any,
        memory: Any,
        n_slots: int,
        n_batch: int,
        rows_per_sequence: int,
        prefill_while_decoding: int,
        prefix_cache: bool,
        piece: Callable[[int], bytes],
        eog: frozenset[int],
        name: str,
        threads: int = 1,
        batch_invariant: bool = True,
        lone_steps_split: bool = True,
        slot_capacity: int = 0,
    ) -> None:
        self.name = name
        self._ctx = ctx
        self.threads = threads  # llama.cpp's threads for this context's steps (set_threads changes it)
        self._batch_invariant = batch_invariant and slot_capacity > 0
        self._pad_lone_steps = self._batch_invariant and lone_steps_split  # see LONE_STEP_CELLS
        self._slot_capacity = slot_capacity
        self._slots = SlotTable(memory, n_slots, prefix_cache=prefix_cache)
        self._n_batch = n_batch
        self._rows_per_sequence = max(1, min(rows_per_sequence, n_batch))
        self._prefill_while_decoding = max(1, prefill_while_decoding)
        self._piece = piece
        self._eog = eog
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._inbox: deque[Sequence] = deque()
        self._waiting: deque[Sequence] = deque()
        self._running: list[Sequence] = []
        self._dirty: list[Sequence] = []
        self.counters = Counters()
        self.wake: Callable[[], None] = lambda: None
        self.failure: str | None = None  # set by the decode loop while this context cannot serve
        self._abort: GarrisonError | None = None

    # -- called from any thread ------------------------------------------------------------------

    def submit(self, seq: Sequence) -> None:
        """Queue a sequence; it is admitted FIFO as soon as a slot is free (refused while the engine is down)."""
        if self.failure:
            raise EngineUnavailable(f"the engine for '{self.name}' is unavailable: {self.failure}")
        self._inbox.append(seq)
        self.wake()

    def cancel(self, seq: Sequence) -> None:
        """Cancel a sequence; its slot is freed before the next decode step."""
        if not seq.finished:
            seq.cancelled = True
            self.wake()

    def abort(self, error: GarrisonError) -> None:
        """Fail every queued, waiting and running sequence with `error` at the next step (any thread)."""
        self._abort = error
        self.wake()

    def has_work(self) -> bool:
        """Whether anything is queued, waiting or running (the decode loop sleeps otherwise)."""
        return bool(self._inbox or self._waiting or self._running or self._abort)

    def metrics(self) -> dict[str, int]:
        """A snapshot of the scheduler's load and totals."""
        c = self.counters
        return {
            "slots": len(self._slots.slots),
            "running": len(self._running),
            "waiting": len(self._waiting) + len(self._inbox),
            "requests_total": c.requests,
            "tokens_prefilled_total": c.tokens_prefilled,
            "tokens_generated_total": c.tokens_generated,
            "kv_cells_used": self._slots.cells_used,
            "prefix_cache_hits_total": c.prefix_hits,
            "prefix_cache_tokens_total": c.prefix_tokens,
            "decode_steps_total": c.steps,
            "running_peak": c.running_peak,
            "step_ns_total": c.step_ns,
            "decode_ns_total": c.decode_ns,
            "sample_ns_total": c.sample_ns,
            "padded_steps_total": c.padded_steps,
        }

    # -- decode thread only ------------------------------------------------------------------------

    def step(self) -> None:
        """One scheduling round: take arrivals, drop cancelled work, admit, decode one batch, deliver.

        Anything raised here reaches the decode loop, which fails this context's sequences (`recover`).
        """
        started = time.perf_counter_ns()
        if self._abort is not None:
            error, self._abort = self._abort, None
            self._fail_every(error)
            return
        try:
            while self._inbox:
                self._waiting.append(self._inbox.popleft())
            self._reap()
            self._admit()
            if self._running:
                self._decode_step()
            self._flush()
        finally:
            self.counters.step_ns += time.perf_counter_ns() - started

    def set_threads(self, threads: int) -> None:
        """Use `threads` llama.cpp threads from the next step on (decode thread only; a switch keeps the bits)."""
        if threads != self.threads:
            llama_cpp.llama_set_n_threads(self._ctx, threads, threads)
            self.threads = threads

    def recover(self, error: GarrisonError) -> None:
        """After a failed step: fail every queued, waiting and running sequence, and empty the KV cache.

        Raises when the context cannot be reset; the decode loop then reports the engine unhealthy and
        tries again later.
        """
        self._fail_every(error)
        self._slots.reset()

    def _fail_every(self, error: GarrisonError) -> None:
        """End every sequence with `error`; their slots are free (their KV stays for reuse)."""
        while self._inbox:
            self._waiting.append(self._inbox.popleft())
        for seq in [*self._running, *self._waiting]:
            if not seq.finished:
                self._emit(seq, error)
                seq.finished = True
                try:
                    seq.sampler.close()
                except Exception:  # noqa: BLE001 - a sampler that cannot be freed must not block recovery
                    log.exception("llama engine %s could not free a sampler", self.name)
        for seq in self._running:
            if seq.slot is not None:
                self._slots.release(seq.slot)
                seq.slot = None
        self._running.clear()
        self._waiting.clear()
        try:
            self._flush()
        finally:
            self._dirty.clear()

    def close(self, error: GarrisonError) -> None:
        """Once no thread steps this context any more: fail what is left and free the batch."""
        try:
            self.recover(error)
        finally:
            llama_cpp.llama_batch_free(self._batch)

    def _reap(self) -> None:
        if any(seq.cancelled for seq in self._waiting):
            kept = deque[Sequence]()
            for seq in self._waiting:
                if seq.cancelled:
                    self._close(seq)
                else:
                    kept.append(seq)
            self._waiting = kept
        for seq in [s for s in self._running if s.cancelled]:
            self._retire(seq)

    def _admit(self) -> None:
        while self._waiting:
            if not self._slots.has_free(1 + len(self._waiting[0].forks)):
                return
            placement = self._slots.acquire(self._waiting[0].prompt)
            if placement is None:
                return
            seq = self._waiting.popleft()
            seq.slot = placement.slot
            for child in seq.forks:
                child.slot = _slot_of(self._slots.acquire([]))
            seq.cached = seq.n_prompt_done = placement.cached
            seq.admitted_ns = time.perf_counter_ns()
            self._running.append(seq)
            c = self.counters
            c.requests += 1
            c.running_peak = max(c.running_peak, len(self._running))
            if placement.cached:
                c.prefix_hits += 1
                c.prefix_tokens += placement.cached

    def _decode_step(self) -> None:
        """Decode one batch: every decoding sequence's next token plus prompt chunks, in slot order."""
        decoding = sum(1 for seq in self._running if seq.decoding)
        budget = self._n_batch - decoding
        if decoding:  # a step's length is everyone's inter-token latency: bound the prompt rows riding in it
            budget = min(budget, self._prefill_while_decoding)
        chunks: dict[Sequence, int] = {}
        for seq in self._running:  # admission order: the oldest prompt is prefilled first
            if budget <= 0:
                break
            if not seq.decoding:
                chunks[seq] = n = min(len(seq.prompt) - seq.n_prompt_done, self._rows_per_sequence, budget)
                budget -= n
        batch = self._batch
        batch.n_tokens = 0
        samplers: list[tuple[Sequence, int]] = []
        fed: list[tuple[Sequence, list[int]]] = []
        for seq in sorted(self._running, key=lambda s: _slot(s).seq_id):
            slot = _slot(seq)
            if seq.decoding:
                samplers.append((seq, self._add(seq.next_token, len(slot.tokens), slot.seq_id, True)))
                fed.append((seq, [seq.next_token]))
            elif seq in chunks:
                start = seq.n_prompt_done
                chunk = seq.prompt[start : start + chunks[seq]]
                last = len(seq.prompt) - 1
                index = -1
                for offset, token in enumerate(chunk):
                    index = self._add(token, start + offset, slot.seq_id, start + offset == last)
                if start + len(chunk) > last:
                    samplers.append((seq, index))
                fed.append((seq, chunk))
        padding = self._pad_lone_step(fed)
        decode_started = time.perf_counter_ns()
        try:
            status = llama_cpp.llama_decode(self._ctx, batch)
        finally:
            if padding is not None:
                self._slots.drop_after(padding)
        self.counters.decode_ns += time.perf_counter_ns() - decode_started
        if status != 0:
            raise EngineError(f"llama_decode returned {status} for a batch of {batch.n_tokens} tokens")
        self.counters.steps += 1
        for seq, tokens in fed:
            self._slots.append(_slot(seq), tokens)
            if not seq.decoding:
                seq.n_prompt_done += len(tokens)
                self.counters.tokens_prefilled += len(tokens)
        sample_started = time.perf_counter_ns()
        sampled = [(seq, seq.sampler.sample(self._ctx, index)) for seq, index in samplers]
        sampled += self._start_forks(samplers)
        self.counters.sample_ns += time.perf_counter_ns() - sample_started
        for seq, token in sampled:
            self._accept(seq, token)

    def _pad_lone_step(self, fed: list[tuple[Sequence, list[int]]]) -> Slot | None:
        """Add a padding row beside a lone one-token step past `LONE_STEP_CELLS`; the slot it wrote to."""
        if not self._pad_lone_steps or self.threads < 2 or self._batch.n_tokens != 1:
            return None
        slot = _slot(fed[0][0])
        if len(slot.tokens) + 1 <= LONE_STEP_CELLS:
            return None
        spare = self._slots.spare_neighbour(slot, self._slot_capacity)
        if spare is None:
            return None
        self._add(self._batch.token[0], len(spare.tokens), spare.seq_id, False)
        self.counters.padded_steps += 1
        return spare

    def _add(self, token: int, pos: int, seq_id: int, logits: bool) -> int:
        batch = self._batch
        i = batch.n_tokens
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq_id
        batch.logits[i] = logits
        batch.n_tokens = i + 1
        return i

    def _accept(self, seq: Sequence, token: int) -> None:
        """Apply one sampled token: stop on end-of-generation, stream safe text, stop strings, budget."""
        if not seq.first_token_ns:
            seq.first_token_ns = time.perf_counter_ns()
        if token in self._eog:
            self._finish(seq, "stop")
            return
        seq.n_generated += 1
        seq.pending_tokens += 1
        self.counters.tokens_generated += 1
        result = seq.text.feed(self._piece(token))
        if result.text:
            self._emit(seq, TokenDelta(result.text, seq.pending_tokens))
            seq.pending_tokens = 0
        if result.stopped:
            self._finish(seq, "stop")
        elif seq.n_generated >= seq.budget:
            self._finish(seq, "length")
        else:
            seq.next_token = token

    def _finish(self, seq: Sequence, reason: FinishReason) -> None:
        tail = seq.text.finish()
        if tail or seq.pending_tokens:
            self._emit(seq, TokenDelta(tail, seq.pending_tokens))
            seq.pending_tokens = 0
        end = time.perf_counter_ns()
        first = seq.first_token_ns or end
        self._emit(seq, GenerationDone(
            finish_reason=reason,
            usage=Usage(prompt_tokens=len(seq.prompt), completion_tokens=seq.n_generated,
                        cached_tokens=seq.cached),
            timings=Timings(
                queued_ns=seq.admitted_ns - seq.submitted_ns,
                prompt_eval_ns=first - seq.admitted_ns,
                eval_ns=end - first,
                total_ns=end - seq.admitted_ns,
            ),
        ))
        self._retire(seq)

    def _retire(self, seq: Sequence) -> None:
        """Take a sequence out of the batch: its slot is free again, its KV stays for prefix reuse."""
        self._running.remove(seq)
        if seq.slot is not None:
            self._slots.release(seq.slot)
            seq.slot = None
        self._close(seq)

    def _start_forks(self, samplers: list[tuple[Sequence, int]]) -> list[tuple[Sequence, int]]:
        """Choices 2..n of a request whose prompt was just prefilled: each takes a copy of its KV and samples
        its first token from the same logits row, so n choices cost one prefill."""
        sampled = []
        for seq, index in samplers:
            children, seq.forks = seq.forks, []
            for child in children:
                if child.cancelled:
                    self._slots.release(_slot(child))
                    child.slot = None
                    self._close(child)
                    continue
                self._slots.share(_slot(seq), _slot(child), len(seq.prompt))
                child.n_prompt_done = len(child.prompt)
                child.admitted_ns = seq.admitted_ns
                self._running.append(child)
                sampled.append((child, child.sampler.sample(self._ctx, index)))
        return sampled

    def _close(self, seq: Sequence) -> None:
        seq.finished = True
        seq.sampler.close()
        for child in seq.forks:  # never started: give back the slots reserved for them
            if child.slot is not None:
                self._slots.release(child.slot)
                child.slot = None
            self._close(child)
        seq.forks = []

    def _emit(self, seq: Sequence, event: Outcome) -> None:
        if seq.cancelled:
            return
        if not seq.outbox:
            self._dirty.append(seq)
        seq.outbox.append(event)

    def _flush(self) -> None:
        """Hand this step's events to their event loops: one thread-safe call per loop."""
        if not self._dirty:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[Sequence]] = {}
        for seq in self._dirty:
            by_loop.setdefault(seq.loop, []).append(seq)
        self._dirty.clear()
        for loop, seqs in by_loop.items():
            items = [(seq.queue, seq.outbox) for seq in seqs]
            for seq in seqs:
                seq.outbox = []
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the requester's loop is closed: nobody listens, free their slots
                for seq in seqs:
                    seq.cancelled = True


def _slot(seq: Sequence) -> Slot:
    assert seq.slot is not None, "a running sequence always has a slot"
    return seq.slot


def _slot_of(placement: Placement | None) -> Slot:
    assert placement is not None, "admission counted a free slot for every fork"
    return placement.slot


class DecodeLoop:
    """The one thread per process that owns every llama.cpp context and steps their schedulers in turn.

    The thread never dies silently: an exception out of a step fails that context's sequences with an
    `EngineError` and the loop goes on; a context that cannot even be reset is reported (`failure`) and
    retried with a growing pause, and new requests to it are refused with 503 until it recovers.
    """

    RETRY_S = (0.1, 0.5, 2.0, 5.0)

    def __init__(self, governor: ThreadGovernor | None = None) -> None:
        self.governor = governor  # chooses every context's thread count before each round; None: fixed
        self._schedulers: list[BatchScheduler] = []
        self._cond = threading.Condition()
        self._signalled = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._busy = threading.Lock()  # held by the decode thread while it steps a round
        self.restarts = 0  # steps that failed and were recovered from
        self._died: str | None = None

    def attach(self, scheduler: BatchScheduler) -> None:
        """Drive `scheduler` from this loop's thread (started on first attach)."""
        scheduler.wake = self.wake
        self._schedulers.append(scheduler)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="llama-decode", daemon=True)
            self._thread.start()

    def detach(self, scheduler: BatchScheduler) -> None:
        """Stop stepping `scheduler` (its engine is closing); the thread ends with the last one."""
        with self._cond:
            if scheduler in self._schedulers:
                self._schedulers.remove(scheduler)
            self._stopping = not self._schedulers
            self._signalled = True
            self._cond.notify()
        with self._busy:  # the round in progress, if any, is over: nobody steps `scheduler` any more
            pass
        thread = self._thread
        if self._stopping and thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)

    def wake(self) -> None:
        """Make the decode thread look at its schedulers again (new work or a cancellation)."""
        with self._cond:
            self._signalled = True
            self._cond.notify()

    def failure(self) -> str | None:
        """Why the loop cannot serve (a context that could not be reset, or a dead thread), else None."""
        if self._died is not None:
            return self._died
        if self._thread is not None and not self._thread.is_alive() and not self._stopping:
            return "the decode thread has stopped"
        reasons = [f"{s.name}: {s.failure}" for s in self._schedulers if s.failure]
        return "; ".join(reasons) or None

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # noqa: BLE001 - recorded for /health before the thread ends
            self._died = f"the decode thread stopped: {type(exc).__name__}: {exc}"
            log.critical("llama decode thread stopped", exc_info=True)
            for scheduler in list(self._schedulers):
                scheduler.failure = scheduler.failure or self._died
            raise

    def _serve(self) -> None:
        retry_at: dict[BatchScheduler, tuple[float, int]] = {}
        while True:
            with self._cond:
                while not self._signalled and not self._stopping and not self._ready(retry_at):
                    self._cond.wait(timeout=self._pause(retry_at))
                self._signalled = False
                if self._stopping:
                    return
                schedulers = list(self._schedulers)
            with self._busy:
                self._round(schedulers, retry_at)

    def _round(self, schedulers: list[BatchScheduler], retry_at: dict) -> None:
        threads = None
        if self.governor is not None:
            try:
                threads = self.governor.threads()
            except Exception:  # noqa: BLE001 - a broken measurement must not stop the decode thread
                log.exception("the thread governor failed; llama.cpp keeps its thread count from now on")
                self.governor = None
        for scheduler in schedulers:
            if scheduler not in self._schedulers:  # detached while this round waited
                continue
            if scheduler.failure:
                if scheduler in retry_at and time.monotonic() < retry_at[scheduler][0]:
                    continue
                if self._recover(scheduler, EngineError("the engine is recovering from a failure"), retry_at):
                    log.warning("llama engine %s recovered", scheduler.name)
                continue
            if not scheduler.has_work():
                continue
            try:
                if threads is not None:
                    scheduler.set_threads(threads)
                scheduler.step()
            except Exception as exc:  # noqa: BLE001 - fail this context's requests, keep serving
                log.exception("llama engine %s failed a decode step", scheduler.name)
                self.restarts += 1
                self._recover(scheduler, EngineError(f"the engine failed while generating ({type(exc).__name__})"),
                              retry_at)

    def _recover(self, scheduler: BatchScheduler, error: EngineError, retry_at: dict) -> bool:
        try:
            scheduler.recover(error)
        except Exception as exc:  # noqa: BLE001 - reported on /health, retried later
            attempts = retry_at.get(scheduler, (0.0, 0))[1]
            pause = self.RETRY_S[min(attempts, len(self.RETRY_S) - 1)]
            retry_at[scheduler] = (time.monotonic() + pause, attempts + 1)
            scheduler.failure = f"cannot reset the llama.cpp context ({type(exc).__name__}: {exc})"
            log.exception("llama engine %s could not recover; retrying in %.1f s", scheduler.name, pause)
            return False
        retry_at.pop(scheduler, None)
        scheduler.failure = None
        return True

    def _ready(self, retry_at: dict) -> bool:
        now = time.monotonic()
        return any(s.has_work() and not s.failure for s in self._schedulers) or any(
            when <= now for when, _ in retry_at.values())

    @staticmethod
    def _pause(retry_at: dict) -> float | None:
        if not retry_at:
            return None
        return max(0.0, min(when for when, _ in retry_at.values()) - time.monotonic())
