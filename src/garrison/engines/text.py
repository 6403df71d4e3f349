"""Turning sampled tokens into safe-to-send text: UTF-8 reassembly and stop-string hold-back."""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field


@dataclass(slots=True)
class StopResult:
    """What may be sent now, and whether a stop string ended the generation."""

    text: str
    stopped: bool = False


@dataclass(slots=True)
class TextStream:
    """Accumulates token bytes, emits whole UTF-8 text, and holds back anything that may start a stop string.

    Stop strings are matched across token boundaries; the matched stop string itself is never emitted
    (OpenAI semantics).
    """

    stop: list[str] = field(default_factory=list)
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )
    _pending: str = ""
    _stopped: bool = False
    text: str = ""

    def __post_init__(self) -> None:
        self.stop = [s for s in self.stop if s]

    def feed(self, piece: bytes) -> StopResult:
        """Add one token's bytes; return the text that is now safe to emit."""
        if self._stopped:
            return StopResult("", True)
        self._pending += self._decoder.decode(piece)
        return self._release()

    def finish(self) -> str:
        """Flush whatever is held back at the end of generation (no stop string matched)."""
        if self._stopped:
            return ""
        self._pending += self._decoder.decode(b"", final=True)
        out, self._pending = self._pending, ""
        self.text += out
        return out

    def _release(self) -> StopResult:
        if not self.stop:
            out, self._pending = self._pending, ""
            self.text += out
            return StopResult(out)
        first = min((i for i in (self._pending.find(s) for s in self.stop) if i >= 0), default=-1)
        if first >= 0:
            out = self._pending[:first]
            self._pending = ""
            self._stopped = True
            self.text += out
            return StopResult(out, True)
        hold = self._longest_partial_stop()
        cut = len(self._pending) - hold
        out, self._pending = self._pending[:cut], self._pending[cut:]
        self.text += out
        return StopResult(out)

    def _longest_partial_stop(self) -> int:
        """Length of the longest tail of pending text that is a proper prefix of some stop string."""
        best = 0
        for stop in self.stop:
            for size in range(min(len(stop) - 1, len(self._pending)), best, -1):
                if self._pending.endswith(stop[:size]):
                    best = size
                    break
        return best
