"""InferenceService: looks models up, admits requests through a bounded queue, and runs engines."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from garrison.domain import (
    Completion,
    EmbeddingRequest,
    EmbeddingResult,
    GenerationDone,
    GenerationEvent,
    GenerationRequest,
    Timings,
    TokenDelta,
    Usage,
)
from garrison.engines.base import Embedder, Engine, EngineRegistry, default_engines
from garrison.errors import EngineError, GarrisonError, InvalidRequest, Overloaded
from garrison.registry import ModelInfo, ModelRegistry, build_registry
from garrison.settings import Settings


@dataclass(slots=True)
class _Admission:
    """How many requests a model holds (running or waiting) against its limit."""

    limit: int
    in_flight: int = 0


class InferenceService:
    """The one entry point routers use for generation and embeddings, whatever the surface."""

    def __init__(self, registry: ModelRegistry, engines: dict[str, Engine | Embedder], settings: Settings) -> None:
        self.registry = registry
        self._engines = engines
        limit = settings.engine.max_concurrent_sequences + settings.engine.max_queue
        self._admission = {model_id: _Admission(limit) for model_id in engines}

    @classmethod
    def from_settings(cls, settings: Settings, engines: EngineRegistry | None = None) -> InferenceService:
        """Load every configured model (digests checked) and build its engine."""
        engines = engines or default_engines()
        registry = build_registry(settings)
        generate = [m for m in registry if m.kind == "generate"]
        embed = [m for m in registry if m.kind == "embed"]
        built: dict[str, Engine | Embedder] = {}
        if generate:
            built.update(engines.factory("llama")(generate, settings))
        if embed:
            built.update(engines.factory("onnx-embeddings")(embed, settings))
        return cls(registry, built, settings)

    async def aclose(self) -> None:
        """Close every engine (contexts, models, batches freed); the app's lifespan calls it on shutdown."""
        for engine in self._engines.values():
            close = getattr(engine, "aclose", None)
            if close is not None:
                await close()

    def abort(self, error: GarrisonError) -> None:
        """Fail every running and queued generation now, each with `error` (a shutdown's drain bound passed)."""
        for engine in self._engines.values():
            abort = getattr(engine, "abort", None)
            if abort is not None:
                abort(error)

    def model(self, model_id: str, kind: str | None = None) -> ModelInfo:
        return self.registry.get(model_id, kind)  # type: ignore[arg-type]

    def engine(self, model_id: str) -> Engine | Embedder:
        return self._engines[model_id]

    def load_state(self) -> dict[str, dict[str, int]]:
        """Running-or-waiting requests per model, for health and metrics."""
        return {k: {"in_flight": a.in_flight, "limit": a.limit} for k, a in self._admission.items()}

    def engine_metrics(self) -> dict[str, dict[str, int]]:
        """Scheduler metrics of every engine that reports them (running, waiting, tokens, KV, prefix hits)."""
        return {
            model_id: engine.metrics()  # type: ignore[union-attr]
            for model_id, engine in self._engines.items()
            if callable(getattr(engine, "metrics", None))
        }

    @contextlib.contextmanager
    def _admit(self, model_id: str):  # type: ignore[no-untyped-def]
        admission = self._admission[model_id]
        if admission.in_flight >= admission.limit:
            raise Overloaded(
                f"model '{model_id}' is at capacity ({admission.limit} requests running or queued); "
                "retry shortly",
                retry_after=1.0,
            )
        admission.in_flight += 1
        try:
            yield
        finally:
            admission.in_flight -= 1

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Generate, yielding deltas then one GenerationDone; closing it early cancels the generation."""
        info = self.model(request.model, "generate")
        engine = self._engines[info.id]
        assert isinstance(engine, Engine)
        with self._admit(info.id):
            events = engine.generate(request)
            try:
                async for event in events:
                    yield event
            finally:
                await events.aclose()  # type: ignore[attr-defined]

    async def start(self, request: GenerationRequest) -> tuple[GenerationEvent, AsyncIterator[GenerationEvent]]:
        """Begin a generation and wait for its first event, so request errors surface before streaming."""
        events = self.stream(request)
        try:
            first = await anext(events)
        except BaseException:
            await events.aclose()
            raise
        return first, events

    async def complete(self, request: GenerationRequest) -> Completion:
        """Generate to the end and return the whole text."""
        parts: list[str] = []
        done: GenerationDone | None = None
        async for event in self.stream(request):
            if isinstance(event, TokenDelta):
                parts.append(event.text)
            else:
                done = event
        if done is None:
            raise EngineError("the engine ended without a result")
        return Completion(
            request_id=request.request_id,
            model=request.model,
            text="".join(parts),
            finish_reason=done.finish_reason,
            usage=done.usage,
            timings=done.timings,
            created=request.created,
        )

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        info = self.model(request.model, "embed")
        embedder = self._engines[info.id]
        assert isinstance(embedder, Embedder)
        if not request.inputs:
            raise InvalidRequest("'input' must not be empty", param="input")
        with self._admit(info.id):
            return await embedder.embed(request)


__all__ = ["InferenceService", "Timings", "Usage"]
