"""A request's choices on the embedded engine: their events merged into one stream, logprobs attached, tool
calls parsed out of the text, and one GenerationDone when the last choice ends.

The n sequences of a request share one event queue: each sequence's queue is a `ChoiceQueue` that forwards
its events, tagged with the choice index, into it (the scheduler only ever calls `put_nowait`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from garrison.domain import (
    FinishReason,
    GenerationDone,
    GenerationEvent,
    GenerationStarted,
    Timings,
    TokenDelta,
    TokenLogprob,
    ToolCall,
    ToolCallEvent,
    TopLogprob,
    Usage,
)
from garrison.engines.logprobs import Record
from garrison.engines.sampling import SamplerChain
from garrison.engines.tools.parse import ToolCallParser

Outcome = GenerationEvent | BaseException
Tagged = tuple[int, Outcome]


class ChoiceQueue(asyncio.Queue[Outcome]):
    """A sequence's event queue that forwards into the request's shared queue, tagged with its choice."""

    def __init__(self, shared: asyncio.Queue[Tagged], choice: int) -> None:
        super().__init__()
        self._shared = shared
        self._choice = choice

    def put_nowait(self, item: Outcome) -> None:
        self._shared.put_nowait((self._choice, item))


class ChoiceStream:
    """One choice's scheduler events turned into the domain events a surface frames."""

    def __init__(self, index: int, sampler: SamplerChain, parser: ToolCallParser | None,
                 piece: Callable[[int], bytes], logprobs: bool) -> None:
        self.index = index
        self._sampler = sampler
        self._parser = parser
        self._piece = piece
        self._logprobs = logprobs
        self._used = 0  # sampler records already attached to a delta
        self._tokens = 0
        self._pending: list[TokenLogprob] = []

    def delta(self, delta: TokenDelta) -> list[GenerationEvent]:
        self._tokens += delta.tokens
        if self._logprobs:
            records = self._sampler.records[self._used:self._used + delta.tokens]
            self._used += len(records)
            self._pending.extend(self._logprob(r) for r in records)
        return self._events(self._parser.feed(delta.text) if self._parser else [delta.text])

    def finish(self, reason: FinishReason) -> tuple[list[GenerationEvent], FinishReason]:
        """The choice ended: settle held-back text and calls; a reply with calls finishes as "tool_calls"."""
        events = self._events(self._parser.finish() if self._parser else [])
        if self._tokens or self._pending:
            events.append(self._delta(""))
        if self._parser is not None and self._parser.calls and reason == "stop":
            reason = "tool_calls"
        return events, reason

    def _events(self, pieces: list[str | ToolCall]) -> list[GenerationEvent]:
        events: list[GenerationEvent] = []
        calls = len(self._parser.calls) - sum(isinstance(p, ToolCall) for p in pieces) if self._parser else 0
        for piece in pieces:
            if isinstance(piece, str):
                events.append(self._delta(piece))
            else:
                events.append(ToolCallEvent(call=piece, index=calls, choice=self.index))
                calls += 1
        return events

    def _delta(self, text: str) -> TokenDelta:
        delta = TokenDelta(text=text, tokens=self._tokens, choice=self.index,
                           logprobs=self._pending if self._logprobs else None)
        self._tokens, self._pending = 0, []
        return delta

    def _logprob(self, record: Record) -> TokenLogprob:
        raw = self._piece(record.token)
        top = [TopLogprob(token=self._piece(t).decode("utf-8", "replace"), logprob=lp, bytes=list(self._piece(t)))
               for t, lp in record.top]
        return TokenLogprob(token=raw.decode("utf-8", "replace"), logprob=record.logprob, bytes=list(raw), top=top)


async def merge(shared: asyncio.Queue[Tagged], streams: list[ChoiceStream]) -> AsyncIterator[GenerationEvent]:
    """Every choice's events as they come, then one GenerationDone over all of them."""
    dones: dict[int, GenerationDone] = {}
    while len(dones) < len(streams):
        choice, event = await shared.get()
        match event:
            case BaseException():
                raise event
            case TokenDelta():
                for out in streams[choice].delta(event):
                    yield out
            case GenerationDone():
                events, reason = streams[choice].finish(event.finish_reason)
                for out in events:
                    yield out
                dones[choice] = replace(event, finish_reason=reason)
            case ToolCallEvent() | GenerationStarted():
                yield event
    yield combine([dones[i] for i in range(len(streams))])


def combine(dones: list[GenerationDone]) -> GenerationDone:
    """The request's end: the prompt counted once (its KV is shared), completions summed, the longest times."""
    first = dones[0]
    if len(dones) == 1:
        return first
    usage = Usage(prompt_tokens=first.usage.prompt_tokens, cached_tokens=first.usage.cached_tokens,
                  completion_tokens=sum(d.usage.completion_tokens for d in dones))
    timings = Timings(
        queued_ns=first.timings.queued_ns,
        load_ns=first.timings.load_ns,
        prompt_eval_ns=first.timings.prompt_eval_ns,
        eval_ns=max(d.timings.eval_ns for d in dones),
        total_ns=max(d.timings.total_ns for d in dones),
    )
    return GenerationDone(finish_reason=first.finish_reason, usage=usage, timings=timings,
                          choice_reasons=[d.finish_reason for d in dones])
