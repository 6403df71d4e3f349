"""Weight and KV-cache precisions with their real storage cost in bits per weight (block scales included)."""

from __future__ import annotations

from dataclasses import dataclass

from garrison.errors import InvalidRequest


@dataclass(frozen=True)
class Precision:
    """A weight format: bits per weight of the quantised layers and of embeddings / output head."""

    name: str
    bits: float
    embedding_bits: float
    note: str

    @property
    def bytes_per_weight(self) -> float:
        """Bytes one quantised weight costs, scales included."""
        return self.bits / 8


def _p(name: str, bits: float, note: str, embedding_bits: float | None = None) -> Precision:
    return Precision(name, bits, bits if embedding_bits is None else embedding_bits, note)


# Ordered from largest to smallest footprint: `best_precision` walks this list in order.
PRECISIONS: tuple[Precision, ...] = (
    _p("fp64", 64.0, "IEEE double; only to reproduce the bits/8 x parameters rule"),
    _p("fp32", 32.0, "IEEE single"),
    _p("fp16", 16.0, "IEEE half"),
    _p("bf16", 16.0, "bfloat16: the same two bytes as fp16"),
    _p("q8_0", 8.5, "GGUF: blocks of 32 int8 + one fp16 scale = 34 bytes / 32 weights"),
    _p(
        "fp8",
        8.0,
        "FP8 E4M3 weights with per-tensor scales (vLLM/TensorRT); embeddings and head in 16-bit",
        16.0,
    ),
    _p("int8", 8.0, "int8 per-channel (bitsandbytes LLM.int8 / W8A8); embeddings and head in 16-bit", 16.0),
    _p("q6_k", 6.5625, "GGUF Q6_K: 210 bytes per super-block of 256 weights"),
    _p("q5_k_m", 5.68, "GGUF Q5_K_M mix (Q5_K + Q6_K for attn_v/ffn_down halves): llama.cpp quantize table"),
    _p("q5_0", 5.5, "GGUF: 32 x 5-bit + fp16 scale = 22 bytes / 32 weights"),
    _p("q4_1", 5.0, "GGUF: 32 x 4-bit + fp16 scale + fp16 min = 20 bytes / 32 weights"),
    _p("q4_k_m", 4.84, "GGUF Q4_K_M mix (Q4_K + Q6_K for attn_v/ffn_down halves): llama.cpp quantize table"),
    _p("q4_k_s", 4.58, "GGUF Q4_K_S mix: llama.cpp quantize table"),
    _p("q4_0", 4.5, "GGUF: 32 x 4-bit + fp16 scale = 18 bytes / 32 weights"),
    _p(
        "nf4",
        4.5,
        "bitsandbytes NF4, blocksize 64 with fp32 absmax (4 + 32/64); embeddings and head 16-bit",
        16.0,
    ),
    _p(
        "awq",
        4.15625,
        "AWQ 4-bit, group 128: fp16 scale + 4-bit zero per group; embeddings and head 16-bit",
        16.0,
    ),
    _p(
        "gptq",
        4.15625,
        "GPTQ 4-bit, group 128: fp16 scale + 4-bit zero per group; embeddings and head 16-bit",
        16.0,
    ),
    _p("q3_k_m", 3.91, "GGUF Q3_K_M mix: llama.cpp quantize table"),
    _p("q2_k", 3.35, "GGUF Q2_K mix: llama.cpp quantize table"),
)

_ALIASES: dict[str, str] = {
    "f64": "fp64",
    "float64": "fp64",
    "f32": "fp32",
    "float32": "fp32",
    "f16": "fp16",
    "bfloat16": "bf16",
    "float16": "fp16",
    "half": "fp16",
    "fp8_e4m3": "fp8",
    "e4m3": "fp8",
    "int8_0": "q8_0",
    "w8a8": "int8",
    "llm.int8": "int8",
    "q6k": "q6_k",
    "q5km": "q5_k_m",
    "q5_k": "q5_k_m",
    "q4km": "q4_k_m",
    "q4_k": "q4_k_m",
    "q4ks": "q4_k_s",
    "bnb4": "nf4",
    "bnb-nf4": "nf4",
    "awq-4bit": "awq",
    "awq4": "awq",
    "gptq-4bit": "gptq",
    "gptq4": "gptq",
    "int4": "gptq",
}

_BY_NAME = {p.name: p for p in PRECISIONS}


def get_precision(name: str) -> Precision:
    """The precision called `name` (aliases such as bf16, Q4_K_M or awq-4bit accepted)."""
    raw = name.strip().lower()
    key = _ALIASES.get(raw) or _ALIASES.get(raw.replace("-", "_"), raw.replace("-", "_"))
    precision = _BY_NAME.get(key)
    if precision is None:
        known = ", ".join(p.name for p in PRECISIONS)
        raise InvalidRequest(
            f"Unknown precision '{name}'. Known: {known} (and bf16, int4 aliases).", param="quant"
        )
    return precision


# Candidates for "the largest precision that fits with headroom", largest first: 16-bit, then the GGUF
# quantisations garrison serves through llama.cpp (fp32 buys no quality over a 16-bit checkpoint).
RECOMMENDABLE: tuple[str, ...] = ("fp16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q3_k_m", "q2_k")


# Bytes per cached K or V element for each KV-cache dtype (GGUF block formats include their scales).
KV_DTYPE_BYTES: dict[str, float] = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "fp8": 1.0,
    "q8_0": 34 / 32,
    "q4_0": 18 / 32,
}


def kv_dtype_bytes(name: str) -> float:
    """Bytes per cached element for a KV-cache dtype such as f16, q8_0 or q4_0."""
    key = name.strip().lower()
    key = {"fp16": "f16", "float16": "f16", "fp32": "f32"}.get(key, key)
    if key not in KV_DTYPE_BYTES:
        known = ", ".join(KV_DTYPE_BYTES)
        raise InvalidRequest(f"Unknown KV-cache dtype '{name}'. Known: {known}.", param="kv_dtype")
    return KV_DTYPE_BYTES[key]
