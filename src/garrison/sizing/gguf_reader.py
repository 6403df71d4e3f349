"""Read a GGUF file's architecture and exact tensor sizes from its header (no weights are loaded)."""

# The header is walked directly with the `gguf` package's quantisation types and block sizes:
# `gguf.GGUFReader` also parses every tokenizer array into numpy objects, which takes seconds (18 s on a
# busy 2-core machine) for a 50k-token vocabulary; sizing needs only scalars, array lengths and tensors.

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from garrison.errors import InvalidRequest
from garrison.sizing.architecture import ModelSpec

# llama.cpp hard-codes the local/global layer pattern for these architectures (every Nth layer is global).
_SWA_PATTERN = {"gemma2": 2, "gemma3": 6, "cohere2": 4}
_PLAIN_MLP = {"falcon", "gpt2", "gptneox", "starcoder", "starcoder2", "bloom", "mpt", "phi2", "gptj"}
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GgufArray:
    """An array value: its element type and length (elements are skipped, not decoded)."""

    type: int
    length: int


@dataclass(frozen=True)
class GgufHeader:
    """The metadata key/values and the tensor table of a GGUF file."""

    metadata: dict[str, Any]
    tensors: list[tuple[str, int, int]]  # (name, elements, bytes)


class _Cursor:
    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0

    def unpack(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.unpack("<Q")
        raw = self.buf[self.pos : self.pos + length]
        self.pos += length
        return raw.decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        self.pos += 8 + struct.unpack_from("<Q", self.buf, self.pos)[0]

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            element, length = self.unpack("<I"), self.unpack("<Q")
            if element in _SCALARS:
                fmt = _SCALARS[element]
                size, start = struct.calcsize(fmt), self.pos
                self.pos += size * length
                if length > 4096:  # tokenizer tables: only their length matters
                    return GgufArray(element, length)
                return [struct.unpack_from(fmt, self.buf, start + i * size)[0] for i in range(length)]
            for _ in range(length):
                if element == _STRING:
                    self.skip_string()
                else:
                    self.value(element)
            return GgufArray(element, length)
        raise ValueError(f"unknown GGUF value type {kind}")


def read_header(path: Path) -> GgufHeader:
    """Parse the metadata and tensor table of a little-endian GGUF v2/v3 file."""
    import gguf

    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        cur = _Cursor(buf)
        if buf[:4] != b"GGUF":
            raise ValueError("missing GGUF magic")
        cur.pos = 4
        version = cur.unpack("<I")
        if version not in (2, 3):
            raise ValueError(f"unsupported GGUF version {version} (or a big-endian file)")
        n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
        metadata = {}
        for _ in range(n_kv):
            key = cur.string()
            metadata[key] = cur.value(cur.unpack("<I"))
        tensors = []
        for _ in range(n_tensors):
            name = cur.string()
            dims = [cur.unpack("<Q") for _ in range(cur.unpack("<I"))]
            kind = gguf.GGMLQuantizationType(cur.unpack("<I"))
            cur.unpack("<Q")  # data offset
            elements = 1
            for dim in dims:
                elements *= dim
            block, size = gguf.GGML_QUANT_SIZES[kind]
            tensors.append((name, elements, elements // block * size))
    return GgufHeader(metadata, tensors)


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
