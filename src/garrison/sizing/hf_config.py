"""Read a Hugging Face `config.json` (file or model directory) into a ModelSpec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from garrison.errors import InvalidRequest
from garrison.sizing.architecture import ModelSpec

_PLAIN_MLP = {"falcon", "gpt2", "gpt_neox", "gptj", "starcoder2", "bloom", "opt", "phi", "mpt", "gpt_bigcode"}
_QKV_BIAS = {"qwen2", "qwen2_moe"}
_FOUR_NORMS = {"gemma2", "gemma3", "gemma3_text"}
_SWA_PATTERN = {"gemma2": 2}
# Config classes whose tie_word_embeddings defaults to true when the key is absent.
_TIED_BY_DEFAULT = {"falcon", "gemma", "gemma2", "gemma3", "gemma3_text", "gpt2", "bloom"}


def _first(config: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    return None


def _dtype(config: dict[str, Any]) -> str:
    quant = config.get("quantization_config") or {}
    method = str(quant.get("quant_method", "")).lower()
    if method in ("awq", "gptq"):
        return method
    if method == "bitsandbytes":
        return "nf4" if quant.get("load_in_4bit") else "int8"
    if method in ("fp8", "compressed-tensors") and "fp8" in json.dumps(quant).lower():
        return "fp8"
    dtype = str(_first(config, "torch_dtype", "dtype") or "bfloat16")
    return {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}.get(dtype, "bf16")


def _sliding(config: dict[str, Any], model_type: str, layers: int) -> tuple[int | None, int | None]:
    if config.get("use_sliding_window") is False:
        return None, None
    window = config.get("sliding_window")
    if not window:
        return None, None
    layer_types = config.get("layer_types")
    if isinstance(layer_types, list) and layer_types:
        local = sum(1 for kind in layer_types if kind == "sliding_attention")
        if local == 0:
            return None, None
        pattern = round(layers / (layers - local)) if local < layers else None
        return int(window), pattern
    pattern = _first(config, "sliding_window_pattern") or _SWA_PATTERN.get(model_type)
    return int(window), int(pattern) if pattern else None


def spec_from_config(config: dict[str, Any], *, ident: str, source: str) -> ModelSpec:
    """Build a ModelSpec from the keys of a config.json (Llama/Mistral/Qwen/Gemma/Falcon/DBRX styles)."""
    if isinstance(config.get("text_config"), dict):
        merged = {**config, **config["text_config"]}
        merged.setdefault("torch_dtype", config.get("torch_dtype"))
        config = merged
    model_type = str(config.get("model_type", ""))
    attn = config.get("attn_config") or {}
    ffn = config.get("ffn_config") or {}
    layers = _first(config, "num_hidden_layers", "n_layer", "n_layers", "num_layers")
    hidden = _first(config, "hidden_size", "d_model", "n_embd")
    heads = _first(config, "num_attention_heads", "n_head", "n_heads")
    if not (layers and hidden and heads):
        raise InvalidRequest(
            f"{source}: config lacks num_hidden_layers/hidden_size/num_attention_heads.", param="model"
        )
    kv_heads = _first(config, "num_key_value_heads", "num_kv_heads", "n_head_kv") or attn.get("kv_n_heads")
    if kv_heads is None:
        kv_heads = 1 if config.get("multi_query") else heads
    intermediate = _first(config, "intermediate_size", "ffn_hidden_size", "n_inner") or ffn.get(
        "ffn_hidden_size"
    )
    experts = int(_first(config, "num_local_experts", "num_experts") or ffn.get("moe_num_experts") or 0)
    active = int(_first(config, "num_experts_per_tok", "moe_top_k") or ffn.get("moe_top_k") or 0)
    window, pattern = _sliding(config, model_type, int(layers))
    falcon_new = model_type == "falcon" and config.get("new_decoder_architecture")
    return ModelSpec(
        id=ident,
        name=str(config.get("_name_or_path") or ident),
        layers=int(layers),
        hidden=int(hidden),
        heads=int(heads),
        kv_heads=int(kv_heads),
        head_dim=_first(config, "head_dim"),
        intermediate=int(intermediate or 4 * int(hidden)),
        vocab=int(_first(config, "vocab_size", "padded_vocab_size") or 0),
        context=int(
            _first(config, "max_position_embeddings", "max_seq_len", "n_positions", "seq_length") or 2048
        ),
        tied_embeddings=bool(config.get("tie_word_embeddings", model_type in _TIED_BY_DEFAULT)),
        gated_mlp=model_type not in _PLAIN_MLP,
        qkv_bias=bool(config.get("attention_bias", model_type in _QKV_BIAS)),
        norms_per_layer=4 if (model_type in _FOUR_NORMS or falcon_new) else 2,
        experts=experts,
        experts_active=active,
        expert_intermediate=_first(config, "moe_intermediate_size"),
        sliding_window=window,
        sliding_window_pattern=pattern,
        dtype=_dtype(config),
        source=source,
    )


def read_config(path: Path) -> ModelSpec:
    """Load `path` (a config.json or a directory holding one) and describe the model."""
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise InvalidRequest(f"'{path}' holds no config.json.", param="model")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"'{file}' is not valid JSON: {exc}", param="model") from exc
    if not isinstance(config, dict):
        raise InvalidRequest(f"'{file}' is not a JSON object.", param="model")
    ident = file.parent.name if file.name == "config.json" else file.stem
    return spec_from_config(config, ident=ident, source=str(file))
