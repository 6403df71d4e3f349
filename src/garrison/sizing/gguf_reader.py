"""Read a GGUF file's architecture and exact tensor sizes from its header (no weights are loaded)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from garrison.errors import InvalidRequest
from garrison.gguf_header import GgufArray, read_header
from garrison.sizing.architecture import ModelSpec

# llama.cpp hard-codes the local/global layer pattern for these architectures (every Nth layer is global).
_SWA_PATTERN = {"gemma2": 2, "gemma3": 6, "cohere2": 4}
_PLAIN_MLP = {"falcon", "gpt2", "gptneox", "starcoder", "starcoder2", "bloom", "mpt", "phi2", "gptj"}


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, GgufArray):
        return None
    if isinstance(value, list):
        # Per-layer arrays (e.g. head_count_kv of hybrid models): the widest layer, conservatively.
        return max(int(v) for v in value) if value else None
    return int(value)


def _file_type(code: Any) -> str | None:
    import gguf

    try:
        name = gguf.LlamaFileType(int(code)).name
    except (TypeError, ValueError):
        return None
    short = name.removeprefix("MOSTLY_").removeprefix("ALL_").lower()
    return {"f32": "fp32", "f16": "fp16"}.get(short, short)


def read_gguf(path: Path) -> ModelSpec:
    """Describe the model in a GGUF file: metadata for the architecture, tensors for exact sizes."""
    try:
        header = read_header(path)
    except (ValueError, OSError, struct.error, KeyError) as exc:
        raise InvalidRequest(f"'{path}' is not a readable GGUF file: {exc}", param="model") from exc
    meta_all = header.metadata
    arch = str(meta_all.get("general.architecture") or "")
    if not arch:
        raise InvalidRequest(f"'{path}' has no general.architecture in its metadata.", param="model")

    def meta(key: str) -> int | None:
        return _int(meta_all.get(f"{arch}.{key}"))

    layers = meta("block_count")
    hidden = meta("embedding_length")
    heads = meta("attention.head_count")
    if not (layers and hidden and heads):
        raise InvalidRequest(
            f"'{path}': architecture '{arch}' lacks block_count/embedding_length/head_count.", param="model"
        )
    tokens = meta_all.get("tokenizer.ggml.tokens")
    vocab = meta("vocab_size") or (tokens.length if isinstance(tokens, GgufArray) else 0)
    total = sum(elements for _, elements, _ in header.tensors)
    experts_elements = sum(e for name, e, _ in header.tensors if "_exps." in name)
    embedding = sum(e for name, e, _ in header.tensors if name in ("token_embd.weight", "output.weight"))
    experts = meta("expert_count") or 0
    used = meta("expert_used_count") or 0
    active = total - round(experts_elements * (1 - used / experts)) if experts > 1 and used else total
    sliding = meta("attention.sliding_window")
    return ModelSpec(
        id=path.name,
        name=str(meta_all.get("general.name") or path.stem),
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=meta("attention.head_count_kv") or heads,
        head_dim=meta("attention.key_length"),
        intermediate=meta("feed_forward_length") or 4 * hidden,
        vocab=vocab,
        context=meta("context_length") or 2048,
        gated_mlp=arch not in _PLAIN_MLP,
        experts=experts,
        experts_active=used,
        expert_intermediate=meta("expert_feed_forward_length"),
        sliding_window=sliding,
        sliding_window_pattern=_SWA_PATTERN.get(arch) if sliding else None,
        source=str(path),
        notes=f"GGUF architecture '{arch}'; parameters and weight bytes summed over its tensors.",
        measured_params=total,
        measured_active_params=active,
        measured_embedding_params=embedding,
        file_weights_bytes=sum(size for _, _, size in header.tensors),
        file_type=_file_type(meta_all.get("general.file_type")),
    )
