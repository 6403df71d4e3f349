"""The pipeline's walk over a scripted engine: cleanup shielded from cancellation, events and stages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from fakes import ScriptedEngine, model, service
from garrison.api.openai.framer import OpenAIFramer
from garrison.domain import GenerationEvent, GenerationRequest
from garrison.engines.base import default_engines
from garrison.engines.gguf import load_gguf
from garrison.errors import ConfigError
from garrison.pipeline import frames
from garrison.registry import ModelInfo
from garrison.service import InferenceService
from garrison.settings import ModelConfig, Settings


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


def test_each_model_gets_the_engine_its_config_names(tmp_path: Path) -> None:
    """A third-party engine registers a factory and a model loader; `[[models]] engine = ...` picks it."""
    built: list[list[str]] = []

    def load(config: ModelConfig, settings: Settings) -> ModelInfo:
        return model(config.id, context_length=config.context_length or 64)

    def factory(models: list[ModelInfo], settings: Settings) -> dict[str, Any]:
        built.append([m.id for m in models])
        return {m.id: ScriptedEngine(["hi"]) for m in models}

    engines = default_engines()
    engines.register("scripted", factory, load)
    configs = [{"id": "a", "engine": "scripted"}, {"id": "b", "engine": "scripted", "trust": "public"}]
    settings = Settings(home=tmp_path, default_model=False, engine={"embeddings": False}, models=configs)
    assert [c.trust for c in settings.models] == ["restricted", "public"]  # in-process models see everything
    inference = InferenceService.from_settings(settings, engines)
    assert built == [["a", "b"]]  # one factory call for all of its models
    assert inference.model("a").engine == "scripted" and isinstance(inference.engine("b"), ScriptedEngine)
    with pytest.raises(ConfigError, match="needs `path`"):  # the llama engine's models are GGUF files
        load_gguf(ModelConfig(id="c"), settings)


async def test_a_new_event_kind_cannot_end_a_stream_by_accident(tmp_path: Path) -> None:
    """Every consumer matches events exhaustively: GenerationStarted passes through, text still arrives."""
    engine = ScriptedEngine(["a", "b"], report_prompt=True)
    inference = service({"m": engine}, Settings(home=tmp_path, engine={"embeddings": False}))
    result = await inference.complete(GenerationRequest(model="m", prompt="hi"))
    assert (result.text, result.usage.prompt_tokens) == ("ab", 3)
