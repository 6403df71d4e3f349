"""Framers: how one surface writes a generation on the wire (chunk, done, error, whole body)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol, assert_never

import anyio

from garrison.domain import (
    Citations,
    Completion,
    GenerationDone,
    GenerationEvent,
    GenerationStarted,
    TokenDelta,
    ToolCallEvent,
)
from garrison.errors import EngineError, GarrisonError

log = logging.getLogger(__name__)


class Framer(Protocol):
    """One surface's wire format for one generation (a fresh framer per request: it may keep state)."""

    media_type: str  # of a stream: text/event-stream, application/x-ndjson, ...

    def chunk(self, delta: TokenDelta) -> list[bytes]:
        """Frames for a piece of text (none for an empty one)."""
        ...

    def tool_call(self, event: ToolCallEvent) -> list[bytes]:
        """Frames for one complete tool call."""
        ...

    def citations(self, citations: Citations) -> list[bytes]:
        """Frames for the documents the answer is grounded in (sent just before `done`)."""
        ...

    def done(self, done: GenerationDone) -> list[bytes]:
        """The frames that end a complete stream."""
        ...

    def error(self, exc: GarrisonError) -> list[bytes]:
        """The frames that end a stream that failed (the surface's error shape)."""
        ...

    def whole(self, result: Completion) -> dict[str, Any]:
        """The JSON body of a non-streamed generation."""
        ...


async def frames(
    first: GenerationEvent, events: AsyncIterator[GenerationEvent], framer: Framer, request_id: str
) -> AsyncIterator[bytes]:
    """A generation's events as wire frames, the frames of one event in one write (a chunk's role opener and
    text, the end's finish, usage and [DONE]); an error ends the stream with the framer's error frames."""
    try:
        event: GenerationEvent | None = first
        while event is not None:
            match event:
                case GenerationStarted():
                    pass
                case TokenDelta():
                    if batch := framer.chunk(event):
                        yield b"".join(batch)
                case ToolCallEvent():
                    if batch := framer.tool_call(event):
                        yield b"".join(batch)
                case Citations():
                    if batch := framer.citations(event):
                        yield b"".join(batch)
                case GenerationDone():
                    if batch := framer.done(event):
                        yield b"".join(batch)
                    return
                case _:
                    assert_never(event)
            event = await anext(events, None)
        raise EngineError("the engine ended without a result")
    except GarrisonError as exc:
        for frame in framer.error(exc):
            yield frame
    except Exception:  # noqa: BLE001 - a stream must end with an error event, never a torn connection
        log.exception("stream failed for request %s", request_id)
        for frame in framer.error(GarrisonError("internal server error while streaming")):
            yield frame
    finally:
        with anyio.CancelScope(shield=True):
            await events.aclose()  # type: ignore[attr-defined]
