"""The engine protocol: one method per kind of work plus `aclose`, and a registry built-ins and plugins share."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Protocol, runtime_checkable

from garrison.domain import EmbeddingRequest, EmbeddingResult, GenerationEvent, GenerationRequest
from garrison.errors import ConfigError
from garrison.registry import ModelInfo
from garrison.settings import ModelConfig, Settings


@runtime_checkable
class Engine(Protocol):
    """Generates text: yields `TokenDelta`s then exactly one `GenerationDone`.

    Closing the iterator early (client gone) must cancel the generation and free its resources.
    """

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]: ...

    async def aclose(self) -> None:
        """Release the engine's resources at shutdown (called once, after its last request)."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors."""

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult: ...

    async def aclose(self) -> None:
        """Release the engine's resources at shutdown."""


# Builds the engines for every model configured with this engine name (one call per name).
EngineFactory = Callable[[list[ModelInfo], Settings], dict[str, Engine | Embedder]]
# Turns one `[[models]]` entry into the engine-neutral ModelInfo (reads and checks the model's files).
ModelLoader = Callable[[ModelConfig, Settings], ModelInfo]


class EngineRegistry:
    """Engines by name (`[[models]] engine = "..."`): a factory, and the loader that describes a model."""

    def __init__(self) -> None:
        self._factories: dict[str, EngineFactory] = {}
        self._loaders: dict[str, ModelLoader] = {}

    def register(self, name: str, factory: EngineFactory, loader: ModelLoader | None = None) -> None:
        self._factories[name] = factory
        if loader is not None:
            self._loaders[name] = loader

    def factory(self, name: str) -> EngineFactory:
        try:
            return self._factories[name]
        except KeyError:
            raise ConfigError(f"unknown engine '{name}'; known: {', '.join(sorted(self._factories))}") from None

    def loader(self, name: str) -> ModelLoader:
        """How `[[models]]` entries of engine `name` are described; ConfigError naming the known ones."""
        self.factory(name)
        try:
            return self._loaders[name]
        except KeyError:
            raise ConfigError(f"engine '{name}' serves no configured models (it registered no loader)") from None


def default_engines() -> EngineRegistry:
    """The built-in engines, registered exactly as a third-party engine would be."""
    from garrison.engines import gguf

    registry = EngineRegistry()
    registry.register("llama", _llama_engines, gguf.describe_llama_model)
    registry.register("onnx-embeddings", _onnx_embedders)
    for remote in ("openai", "ollama", "garrison"):  # served elsewhere: vLLM, TGI, llama-server, Ollama, garrison
        registry.register(remote, _upstream_engines, _upstream_model)
    return registry


def _llama_engines(models: list[ModelInfo], settings: Settings) -> dict[str, Engine | Embedder]:
    from garrison.engines import llama  # imported when a model needs it: llama.cpp is slow to load

    return llama.create_engines(models, settings)


def _onnx_embedders(models: list[ModelInfo], settings: Settings) -> dict[str, Engine | Embedder]:
    from garrison.engines import embeddings

    return embeddings.create_engines(models, settings)


def _upstream_engines(models: list[ModelInfo], settings: Settings) -> dict[str, Engine | Embedder]:
    from garrison.engines.upstream import models as upstream

    return upstream.create_engines(models, settings)


def _upstream_model(config: ModelConfig, settings: Settings) -> ModelInfo:
    from garrison.engines.upstream import models as upstream

    return upstream.describe_upstream_model(config, settings)
