"""The pipeline's walk over a scripted engine: cleanup shielded from cancellation, events and stages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio

from fakes import ScriptedEngine, service
from garrison.api.openai.framer import OpenAIFramer
from garrison.domain import GenerationEvent, GenerationRequest
from garrison.pipeline import frames
from garrison.settings import Settings


class AwaitingCleanup(ScriptedEngine):
    """An engine whose cleanup awaits (an upstream connection to close, a slot to hand back)."""

    cleaned = False

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        try:
            async for event in super().generate(request):
                yield event
        finally:
            await anyio.sleep(0)  # in a cancelled scope, unshielded, this is where cleanup would stop
            self.cleaned = True


async def test_a_cancelled_stream_still_runs_an_engine_cleanup_that_awaits(tmp_path: Path) -> None:
    engine = AwaitingCleanup(["a", "b", "c"])
    settings = Settings(home=tmp_path, engine={"embeddings": False})
    inference = service({"m": engine}, settings)
    request = GenerationRequest(model="m", prompt="hi")
    first, events = await inference.start(request)
    body = frames(first, events, OpenAIFramer(request, chat=False), request.request_id)
    assert b"data: " in await anext(body)
    with anyio.CancelScope() as scope:  # the client went away: everything from here on is cancelled
        scope.cancel()
        await body.aclose()  # type: ignore[attr-defined]
    assert engine.cleaned and engine.cancelled == 1
    assert inference.load_state()["m"]["in_flight"] == 0  # its admission place is free again


async def test_engines_are_closed_with_the_service(tmp_path: Path) -> None:
    engine = ScriptedEngine()
    inference = service({"m": engine}, Settings(home=tmp_path, engine={"embeddings": False}))
    await inference.aclose()
    assert engine.closed
