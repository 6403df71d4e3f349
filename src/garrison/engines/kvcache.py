"""KV cache slots of one llama.cpp context: what each sequence id holds, and prefix reuse between them.

The context keeps one KV stream per sequence id (`kv_unified = False`): a sequence's attention reads only
its own cells, in position order, so its numbers never depend on who else is in the batch (for the one
exception, a lone one-token step, see `LONE_STEP_CELLS` in scheduler.py). Finished
sequences leave their KV in place until the slot is needed again; a new prompt that shares a long prefix
with a slot's tokens reuses them: in place when that slot is free, or by copying the source's stream
(`llama_memory_seq_cp`, a whole-buffer copy between streams) when the source is still generating.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import llama_cpp

# Shorter shared prefixes are not worth giving up slot packing (or, for copies, a whole-stream copy).
MIN_REUSE = 16
MIN_COPY = 64


def common_prefix(a: list[int], b: list[int], limit: int) -> int:
    """Length of the longest common prefix of two token lists, at most `limit` (list compares run in C)."""
    n = min(len(a), len(b), limit)
    if n <= 0:
        return 0
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo] and a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(eq=False, slots=True)
class Slot:
    """One sequence id of the context and the tokens whose KV it holds, at positions 0..len-1."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    busy: bool = False


@dataclass(slots=True)
class Placement:
    """Where an admitted sequence runs, and how many of its prompt tokens were already in the cache."""

    slot: Slot
    cached: int


class SlotTable:
    """The context's sequence slots and their cached tokens."""

    def __init__(self, memory: Any, n_slots: int, *, prefix_cache: bool) -> None:
        self._memory = memory
        self._prefix_cache = prefix_cache
        self.slots = [Slot(seq_id) for seq_id in range(n_slots)]

    @property
    def cells_used(self) -> int:
        """KV cells holding a token of some slot (busy or kept for reuse)."""
        return sum(len(slot.tokens) for slot in self.slots)

    def acquire(self, prompt: list[int]) -> Placement | None:
        """A free slot for `prompt`, holding as much of its prefix as the cache has; None when all are busy.

        Without a useful cached prefix the lowest free sequence id is taken: llama.cpp batches only runs
        of consecutive sequence ids together when each has its own stream, so packing keeps a decode
        step to one pass over the weights.
        """
        free = [slot for slot in self.slots if not slot.busy]
        if not free:
            return None
        (own, own_len), (other, other_len) = self._best_matches(prompt)
        if own is not None and own_len >= MIN_REUSE and own_len + MIN_COPY > other_len:
            target = own
            shared = self._truncate(target, own_len)
        elif other is not None and other_len >= MIN_COPY:
            target = free[0]
            self._copy(other, target, other_len)
            shared = other_len
        else:
            target = free[0]
            shared = self._truncate(target, 0)
        target.busy = True
        return Placement(target, shared)

    def _best_matches(self, prompt: list[int]) -> tuple[tuple[Slot | None, int], tuple[Slot | None, int]]:
        """The free and the busy slot sharing the longest prefix with `prompt`, with their lengths.

        At most len(prompt) - 1 tokens count: sampling needs the logits of the prompt's last position.
        """
        best: dict[bool, tuple[Slot | None, int]] = {False: (None, 0), True: (None, 0)}
        if not self._prefix_cache:
            return best[False], best[True]
        limit = len(prompt) - 1
        for slot in self.slots:
            n = common_prefix(slot.tokens, prompt, limit)
            if n > best[slot.busy][1]:
                best[slot.busy] = (slot, n)
        return best[False], best[True]

    def spare_neighbour(self, slot: Slot, capacity: int) -> Slot | None:
        """A free slot next to `slot` (by sequence id) with room for one more cell, for a padding row."""
        for seq_id in (slot.seq_id + 1, slot.seq_id - 1):
            if 0 <= seq_id < len(self.slots):
                other = self.slots[seq_id]
                if not other.busy and len(other.tokens) < capacity:
                    return other
        return None

    def drop_after(self, slot: Slot) -> None:
        """Remove any KV past the slot's recorded tokens (a padding row's cell)."""
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, len(slot.tokens), -1)

    def has_free(self, n: int) -> bool:
        """Whether `n` slots are free (a request with n choices is admitted whole)."""
        return sum(not slot.busy for slot in self.slots) >= n

    def share(self, source: Slot, target: Slot, n: int) -> None:
        """Start `target` with the first `n` cached positions of busy `source` (another choice's prompt)."""
        self._copy(source, target, n)

    def append(self, slot: Slot, tokens: list[int]) -> None:
        """Record tokens whose KV a decode step has just written for this slot."""
        slot.tokens.extend(tokens)

    def release(self, slot: Slot) -> None:
        """The slot's sequence ended: keep its KV for prefix reuse, or drop it when the cache is off."""
        slot.busy = False
        if not self._prefix_cache:
            self._truncate(slot, 0)

    def reset(self) -> None:
        """Forget everything (after a failed decode): clear the KV memory and free every slot."""
        llama_cpp.llama_memory_clear(self._memory, True)
        for slot in self.slots:
            slot.tokens.clear()
            slot.busy = False

    def _truncate(self, slot: Slot, keep: int) -> int:
        """Drop the slot's KV from position `keep` on; returns how many tokens it still holds."""
        if keep >= len(slot.tokens):
            return len(slot.tokens)
        if not llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, keep, -1):
            keep = 0  # memories that cannot cut a sequence partway (recurrent models) drop it whole
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
        del slot.tokens[keep:]
        return keep

    def _copy(self, source: Slot, target: Slot, n: int) -> None:
        """Give `target` the first `n` cached positions of `source` (copied during the next decode)."""
        llama_cpp.llama_memory_seq_cp(self._memory, source.seq_id, target.seq_id, -1, -1)
        target.tokens[:] = source.tokens
        self._truncate(target, n)
