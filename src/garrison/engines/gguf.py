"""GGUF models as the llama engine serves them: the file, its pinned digest and what its metadata declares."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from garrison.errors import ConfigError, ModelIntegrityError
from garrison.gguf_header import GgufArray, read_header
from garrison.registry import ModelInfo, sha256_file
from garrison.settings import ModelConfig, Settings

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
class GgufModel:
    """Everything the llama engine knows about one GGUF file (the engine-neutral view is `ModelInfo`)."""

    id: str
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
    modified: float = 0.0  # the file's mtime when it was loaded

    def model_info(self, *, trust: str = "restricted", engine: str = "llama") -> ModelInfo:
        """The engine-neutral description every surface and check reads."""
        from garrison.engines.fim import supports_fim

        # Every chat model can call tools: through its template's own format, or garrison's generic one.
        capabilities = {"chat", "completions", "tools"} | ({"fim"} if supports_fim(self) else set())
        return ModelInfo(
            id=self.id, kind="generate", engine=engine, context_length=self.context_length,
            capabilities=frozenset(capabilities), trust=trust, details=self, format="gguf",
            size_bytes=self.size_bytes, digest=self.sha256, modified=self.modified,
            quantization=self.quantization, architecture=self.architecture, parameters=self.parameters,
            metadata=self.metadata,
        )


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


def load_gguf(config: ModelConfig, settings: Settings) -> GgufModel:
    """Check a configured GGUF (exists, digest matches the pin) and read its metadata."""
    if config.path is None:
        raise ConfigError(f"model '{config.id}': the llama engine needs `path` (a GGUF file)")
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
    return GgufModel(
        id=config.id,
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
        modified=path.stat().st_mtime,
    )


def describe_llama_model(config: ModelConfig, settings: Settings) -> ModelInfo:
    """The llama engine's model loader: a GGUF file behind the engine-neutral `ModelInfo`."""
    if config.model_extra:
        raise ConfigError(
            f"model '{config.id}': engine '{config.engine}' has no field(s) {', '.join(sorted(config.model_extra))}"
            " (upstream models need engine = \"openai\" or \"ollama\")"
        )
    return load_gguf(config, settings).model_info(trust=config.trust, engine=config.engine)


def gguf_of(info: ModelInfo) -> GgufModel | None:
    """The GGUF details of a model the llama engine serves (None for any other engine)."""
    return info.details if isinstance(info.details, GgufModel) else None
