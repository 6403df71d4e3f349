"""Sentence embeddings: all-MiniLM-L6-v2 as int8 ONNX on onnxruntime (no torch, no download)."""

from __future__ import annotations

import asyncio
import gzip
import importlib.resources
import time

import numpy as np

from garrison.domain import EmbeddingRequest, EmbeddingResult, Timings
from garrison.engines.base import Embedder, Engine
from garrison.errors import ModelIntegrityError
from garrison.registry import ModelInfo, sha256_file
from garrison.settings import Settings

# The model's own tokenizer (Apache-2.0, from sentence-transformers/all-MiniLM-L6-v2), shipped gzipped.
_TOKENIZER = "all-minilm-l6-v2.tokenizer.json.gz"
_MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length


def create_engines(models: list[ModelInfo], settings: Settings) -> dict[str, Engine | Embedder]:
    return {m.id: OnnxEmbedder(m, settings) for m in models if m.kind == "embed"}


class OnnxEmbedder:
    """Mean-pooled, L2-normalised sentence vectors, as sentence-transformers computes them."""

    def __init__(self, info: ModelInfo, settings: Settings) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        path = info.details.path
        if sha256_file(path) != info.digest:
            raise ModelIntegrityError(f"embedding model {path} does not match its pinned sha256")
        self.info = info
        raw = gzip.decompress(importlib.resources.files("garrison.engines.data").joinpath(_TOKENIZER).read_bytes())
        self._tokenizer = Tokenizer.from_str(raw.decode("utf-8"))
        self._tokenizer.enable_truncation(max_length=_MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.engine.threads or 0
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        started = time.perf_counter_ns()
        vectors, tokens = await asyncio.to_thread(self._embed, request.inputs)
        elapsed = time.perf_counter_ns() - started
        return EmbeddingResult(
            model=self.info.id,
            vectors=vectors.tolist(),
            prompt_tokens=tokens,
            timings=Timings(prompt_eval_ns=elapsed, total_ns=elapsed),
        )

    def vectors(self, texts: list[str]) -> np.ndarray:
        """Unit-length float32 vectors, one row per text, computed in the calling thread."""
        return self._embed(texts)[0]

    async def aclose(self) -> None:
        """Release the onnxruntime session."""
        self._session = None

    def count_tokens(self, texts: list[str]) -> int:
        return sum(len(e.ids) for e in self._tokenizer.encode_batch(texts))

    def _embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        vectors: list[np.ndarray] = []
        total = 0
        for start in range(0, len(texts), 32):
            batch = self._tokenizer.encode_batch(texts[start : start + 32])
            ids = np.array([e.ids for e in batch], dtype=np.int64)
            mask = np.array([e.attention_mask for e in batch], dtype=np.int64)
            total += int(mask.sum())
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = self._session.run(None, feeds)[0]
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            vectors.append(pooled / np.clip(norms, 1e-12, None))
        return np.concatenate(vectors).astype(np.float32), total
