"""The engine protocol: one method per kind of work, and a registry that built-ins and plugins share."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Protocol, runtime_checkable

from garrison.domain import EmbeddingRequest, EmbeddingResult, GenerationEvent, GenerationRequest
from garrison.errors import ConfigError
from garrison.registry import ModelInfo
from garrison.settings import Settings


@runtime_checkable
class Engine(Protocol):
    """Generates text: yields `TokenDelta`s then exactly one `GenerationDone`.

    Closing the iterator early (client gone) must cancel the generation and free its resources.
    """

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]: ...


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors."""

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult: ...


EngineFactory = Callable[[list[ModelInfo], Settings], dict[str, Engine | Embedder]]


class EngineRegistry:
    """Engine factories by name; a factory builds the engines for all models of its kind."""

    def __init__(self) -> None:
        self._factories: dict[str, EngineFactory] = {}

    def register(self, name: str, factory: EngineFactory) -> None:
        self._factories[name] = factory

    def factory(self, name: str) -> EngineFactory:
        try:
            return self._factories[name]
        except KeyError:
            raise ConfigError(f"unknown engine '{name}'; known: {', '.join(sorted(self._factories))}") from None


def default_engines() -> EngineRegistry:
    """The built-in engines, registered exactly as a third-party engine would be."""
    from garrison.engines import embeddings, llama

    registry = EngineRegistry()
    registry.register("llama", llama.create_engines)
    registry.register("onnx-embeddings", embeddings.create_engines)
    return registry
