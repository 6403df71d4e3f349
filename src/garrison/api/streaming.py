"""Streaming helpers shared by surfaces: SSE/NDJSON framing and error-as-last-event."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from garrison.api.context import RequestContext
from garrison.domain import Citations, GenerationDone, GenerationEvent, TokenDelta
from garrison.errors import GarrisonError

log = logging.getLogger(__name__)


def sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def ndjson(payload: dict[str, Any]) -> bytes:
    return (json.dumps(payload, separators=(",", ":")) + "\n").encode()


async def relay(
    first: GenerationEvent,
    events: AsyncIterator[GenerationEvent],
    ctx: RequestContext,
    on_delta: Callable[[TokenDelta], bytes | None],
    on_done: Callable[[GenerationDone], list[bytes]],
    on_error: Callable[[GarrisonError], list[bytes]],
) -> AsyncIterator[bytes]:
    """Frame engine events for the wire, keep the request context's tokens current, and end on errors."""
    parts: list[str] = []
    try:
        event: GenerationEvent | None = first
        while event is not None:
            if isinstance(event, TokenDelta):
                parts.append(event.text)
                frame = on_delta(event)
                if frame:
                    yield frame
            elif isinstance(event, Citations):
                pass  # framed by the surfaces once retrieval runs as a pipeline stage
            else:
                ctx.prompt_tokens = event.usage.prompt_tokens
                ctx.completion_tokens = event.usage.completion_tokens
                ctx.response_text = "".join(parts)
                for frame in on_done(event):
                    yield frame
                return
            event = await anext(events, None)
    except GarrisonError as exc:
        ctx.response_text = "".join(parts)
        for frame in on_error(exc):
            yield frame
    except Exception:  # noqa: BLE001 - a stream must end with an error event, never a torn connection
        log.exception("stream failed for request %s", ctx.request_id)
        ctx.response_text = "".join(parts)
        for frame in on_error(GarrisonError("internal server error while streaming")):
            yield frame
    finally:
        await events.aclose()  # type: ignore[attr-defined]
