"""GGUF metadata and Hugging Face config.json readers agree with the catalog and with the files' tensors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from garrison.errors import InvalidRequest
from garrison.registry import embedded_model_path
from garrison.sizing import catalog
from garrison.sizing.estimate import Workload, estimate
from garrison.sizing.gguf_reader import read_gguf
from garrison.sizing.hf_config import read_config
from garrison.sizing.planner import choose_precision, native_precision, resolve_model


def _smollm2_gguf() -> Path:
    return embedded_model_path()  # `make test` installs it; its absence is a failure, not a skip


def test_embedded_gguf_architecture_matches_the_catalog_entry() -> None:
    spec = read_gguf(_smollm2_gguf())
    published = catalog.find_model("smollm2-135m")
    assert (
        spec.layers,
        spec.hidden,
        spec.heads,
        spec.kv_heads,
        spec.intermediate,
        spec.vocab,
        spec.context,
    ) == (
        published.layers,
        published.hidden,
        published.heads,
        published.kv_heads,
        published.intermediate,
        published.vocab,
        published.context,
    )
    assert spec.params == published.params == 134_515_008  # tensors summed == derived from config.json
    assert spec.file_type == "q4_1"
    assert spec.file_weights_bytes == 96_576_768  # the tensors' bytes, the file minus its metadata
    assert spec.kv_bytes_per_token(2.0) == 2 * 30 * 3 * 64 * 2


def test_gguf_default_precision_uses_exact_tensor_bytes() -> None:
    spec = resolve_model(str(_smollm2_gguf()))
    precision = native_precision(spec)
    assert precision.name == "q4_1" and 5.7 < precision.bits < 5.8  # q8_0 embeddings raise the average
    assert spec.weights_bytes(precision) == spec.file_weights_bytes
    assert choose_precision(spec, "q4_1") == precision  # asking for the file's own type keeps exact bytes
    assert spec.weights_bytes(choose_precision(spec, "fp16")) == spec.params * 2


def _write_moe_gguf(path: Path) -> int:
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_context_length(256)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_expert_count(4)
    writer.add_expert_used_count(2)
    writer.add_vocab_size(10)
    writer.add_file_type(0)
    shapes = {"token_embd.weight": (10, 8), "output.weight": (10, 8), "output_norm.weight": (8,)}
    for i in range(2):
        shapes |= {
            f"blk.{i}.attn_q.weight": (8, 8),
            f"blk.{i}.attn_k.weight": (4, 8),
            f"blk.{i}.attn_v.weight": (4, 8),
            f"blk.{i}.attn_output.weight": (8, 8),
            f"blk.{i}.ffn_gate_inp.weight": (4, 8),
            f"blk.{i}.ffn_gate_exps.weight": (4, 16, 8),
            f"blk.{i}.ffn_up_exps.weight": (4, 16, 8),
            f"blk.{i}.ffn_down_exps.weight": (4, 8, 16),
        }
    for name, shape in shapes.items():
        writer.add_tensor(name, np.zeros(shape, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return sum(int(np.prod(s)) for s in shapes.values())


def test_gguf_moe_active_parameters_count_only_used_experts(tmp_path: Path) -> None:
    path = tmp_path / "tiny-moe.gguf"
    total = _write_moe_gguf(path)
    spec = read_gguf(path)
    experts = 2 * 3 * 4 * 16 * 8
    assert spec.params == total
    assert spec.active_params == total - experts // 2  # 2 of 4 experts per token
    assert spec.is_moe and spec.experts == 4 and spec.experts_active == 2
    assert spec.file_type == "fp32" and spec.file_weights_bytes == total * 4
    assert spec.kv_bytes_per_token(2.0) == 2 * 2 * 1 * 4 * 2  # head_dim = 8 / 2 heads


def test_not_a_gguf_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf at all")
    with pytest.raises(InvalidRequest, match="not a readable GGUF"):
        read_gguf(bogus)


LLAMA_31_8B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "attention_bias": False,
    "rope_theta": 500000.0,
}

FALCON_40B = {
    "model_type": "falcon",
    "hidden_size": 8192,
    "num_attention_heads": 128,
    "num_hidden_layers": 60,
    "num_kv_heads": 8,
    "new_decoder_architecture": True,
    "parallel_attn": True,
    "vocab_size": 65024,
    "bias": False,
    "torch_dtype": "bfloat16",
}

DBRX = {
    "model_type": "dbrx",
    "d_model": 6144,
    "n_heads": 48,
    "n_layers": 40,
    "max_seq_len": 32768,
    "vocab_size": 100352,
    "attn_config": {"kv_n_heads": 8, "clip_qkv": 8},
    "tie_word_embeddings": False,
    "ffn_config": {"ffn_hidden_size": 10752, "moe_num_experts": 16, "moe_top_k": 4},
    "torch_dtype": "bfloat16",
}

GEMMA_3_27B = {
    "model_type": "gemma3",
    "torch_dtype": "bfloat16",
    "text_config": {
        "model_type": "gemma3_text",
        "hidden_size": 5376,
        "intermediate_size": 21504,
        "num_attention_heads": 32,
        "num_hidden_layers": 62,
        "num_key_value_heads": 16,
        "head_dim": 128,
        "sliding_window": 1024,
        "sliding_window_pattern": 6,
        "vocab_size": 262208,
        "max_position_embeddings": 131072,
    },
    "vision_config": {"model_type": "siglip_vision_model"},
}


@pytest.mark.parametrize(
    ("config", "catalog_id"),
    [(LLAMA_31_8B, "llama-3.1-8b"), (FALCON_40B, "falcon-40b"), (DBRX, "dbrx"), (GEMMA_3_27B, "gemma-3-27b")],
)
def test_hf_config_reads_like_the_catalog(tmp_path: Path, config: dict[str, object], catalog_id: str) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    spec = read_config(tmp_path)
    published = catalog.find_model(catalog_id)
    assert spec.params == published.params
    assert spec.active_params == published.active_params
    assert spec.sliding_layers == published.sliding_layers
    assert spec.kv_bytes_per_token(2.0) == published.kv_bytes_per_token(2.0)
    workload = Workload(context=8192)
    assert (
        estimate(spec, native_precision(spec), workload).kv_cache_bytes
        == estimate(published, native_precision(published), workload).kv_cache_bytes
    )


def test_hf_config_quantization_config_sets_the_default_precision(tmp_path: Path) -> None:
    config = dict(LLAMA_31_8B, quantization_config={"quant_method": "awq", "bits": 4, "group_size": 128})
    path = tmp_path / "awq.json"
    path.write_text(json.dumps(config))
    assert native_precision(read_config(path)).name == "awq"


def test_directory_without_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="no config.json"):
        resolve_model(str(tmp_path))
