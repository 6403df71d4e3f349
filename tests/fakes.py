"""The one scripted engine (and embedder) for unit tests of the HTTP layer and the pipeline.

Never proof that a feature works with a model: that is what the real server tests are for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from garrison.domain import (
    EmbeddingRequest,
    EmbeddingResult,
    GenerationDone,
    GenerationEvent,
    GenerationRequest,
    GenerationStarted,
    Timings,
    TokenDelta,
    Usage,
)
from garrison.errors import ContextLengthExceeded, EngineError
from garrison.registry import ModelFile, ModelInfo, ModelRegistry
from garrison.service import InferenceService
from garrison.settings import Settings


class ScriptedEngine:
    """Yields scripted pieces and usage; honours max_tokens like a real engine.

    `block` holds every piece until `release` is set; `fail_after_first` raises after the first piece;
    `context` refuses prompts called "too long" and budgets past it; `script()` sets the next requests'
    usage (prompt tokens, completion tokens). Every request and the max_tokens it saw are kept.
    """

    def __init__(
        self,
        pieces: Iterable[str] = ("a", "b"),
        *,
        prompt_tokens: int = 3,
        completion_tokens: int | None = None,
        fail_after_first: bool = False,
        context: int | None = None,
        report_prompt: bool = False,
    ) -> None:
        self.pieces = list(pieces)
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.fail_after_first = fail_after_first
        self.context = context
        self.report_prompt = report_prompt
        self.block = False
        self.release = asyncio.Event()
        self.requests: list[GenerationRequest] = []
        self.budgets: list[int | None] = []  # max_tokens as each call saw it
        self.closed = False
        self.cancelled = 0  # generations closed before their end

    def script(self, prompt_tokens: int, completion_tokens: int | None = None) -> None:
        self.prompt_tokens, self.completion_tokens = prompt_tokens, completion_tokens

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        self.requests.append(request)
        max_tokens = request.sampling.max_tokens
        self.budgets.append(max_tokens)
        if self.context is not None:
            if request.prompt == "too long":
                raise ContextLengthExceeded("the prompt is 99 tokens", param="messages")
            if max_tokens is not None and max_tokens + 4 > self.context:
                raise ContextLengthExceeded(f"{max_tokens + 4} tokens requested", param="max_tokens")
        wanted = len(self.pieces) if self.completion_tokens is None else self.completion_tokens
        total = wanted if max_tokens is None else min(wanted, max_tokens)
        pieces = self.pieces[: max(0, total)] if total < len(self.pieces) else self.pieces
        finished = False
        try:
            if self.report_prompt:
                yield GenerationStarted(self.prompt_tokens)
            left = total
            for index, piece in enumerate(pieces):
                if self.block:
                    await self.release.wait()
                tokens = left if index == len(pieces) - 1 else min(1, left)
                left -= tokens
                yield TokenDelta(piece, tokens)
                if self.fail_after_first and index == 0:
                    raise EngineError("the engine failed while generating: RuntimeError")
            finish = "length" if total < wanted else "stop"
            timings = Timings(prompt_eval_ns=10, eval_ns=20, total_ns=30)
            finished = True
            yield GenerationDone(finish, Usage(prompt_tokens=self.prompt_tokens, completion_tokens=total), timings)
        finally:
            if not finished:
                self.cancelled += 1

    async def aclose(self) -> None:
        self.closed = True


class ScriptedEmbedder:
    """Two-dimensional vectors, three tokens per input."""

    def __init__(self) -> None:
        self.requests: list[EmbeddingRequest] = []
        self.closed = False

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        self.requests.append(request)
        return EmbeddingResult(model=request.model, vectors=[[0.0, 1.0] for _ in request.inputs],
                               prompt_tokens=3 * len(request.inputs))

    async def aclose(self) -> None:
        self.closed = True


def model(model_id: str, kind: str = "generate", context_length: int = 128, **fields: Any) -> ModelInfo:
    """An engine-neutral model entry for a scripted engine."""
    capabilities = {"embeddings"} if kind == "embed" else {"chat", "completions"}
    return ModelInfo(id=model_id, kind=kind, engine="scripted", context_length=context_length,  # type: ignore[arg-type]
                     capabilities=frozenset(capabilities), details=ModelFile(Path(f"/models/{model_id}")),
                     format="gguf", **fields)


def service(engines: dict[str, Any], settings: Settings, context_length: int = 128) -> InferenceService:
    """An InferenceService over scripted engines (an embedder's model is of kind `embed`)."""
    models = [model(name, "embed" if isinstance(e, ScriptedEmbedder) else "generate", context_length)
              for name, e in engines.items()]
    return InferenceService(ModelRegistry(models), engines, settings)
