"""A decoder-only transformer described by the few numbers that decide its memory: `ModelSpec`."""

from __future__ import annotations

from dataclasses import dataclass

from garrison.sizing.precisions import Precision


@dataclass(frozen=True)
class ModelSpec:
    """Published architecture numbers of one model; parameter counts derive from them unless measured."""

    id: str
    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    context: int
    head_dim: int | None = None
    tied_embeddings: bool = False
    gated_mlp: bool = True
    qkv_bias: bool = False
    norms_per_layer: int = 2
    experts: int = 0
    experts_active: int = 0
    expert_intermediate: int | None = None
    sliding_window: int | None = None
    sliding_window_pattern: int | None = None
    dtype: str = "fp16"
    source: str = ""
    notes: str = ""
    aliases: tuple[str, ...] = ()
    measured_params: int | None = None
    measured_active_params: int | None = None
    measured_embedding_params: int | None = None
    file_weights_bytes: int | None = None
    file_type: str | None = None

    @property
    def attn_head_dim(self) -> int:
        """Width of one attention head (explicit in the config, else hidden / heads)."""
        return self.head_dim or self.hidden // self.heads

    @property
    def is_moe(self) -> bool:
        """Whether the feed-forward block is a mixture of experts."""
        return self.experts > 1

    @property
    def sliding_layers(self) -> int:
        """How many layers attend only within the sliding window (their KV cache is capped by it)."""
        if not self.sliding_window:
            return 0
        if self.sliding_window_pattern and self.sliding_window_pattern > 1:
            # Gemma-style: every `pattern`-th layer is global, the others are local.
            return self.layers - self.layers // self.sliding_window_pattern
        return self.layers

    # --- parameter counts -------------------------------------------------------------------------

    def _attention_params(self) -> int:
        d = self.attn_head_dim
        q = self.hidden * self.heads * d
        kv = 2 * self.hidden * self.kv_heads * d
        out = self.heads * d * self.hidden
        bias = (self.heads + 2 * self.kv_heads) * d if self.qkv_bias else 0
        return q + kv + out + bias

    def _expert_params(self) -> int:
        width = self.expert_intermediate or self.intermediate
        return (3 if self.gated_mlp else 2) * self.hidden * width

    def _ffn_params(self, active: bool) -> int:
        if not self.is_moe:
            return self._expert_params()
        router = self.hidden * self.experts
        count = self.experts_active if active else self.experts
        return count * self._expert_params() + router

    @property
    def embedding_params(self) -> int:
        """Input embedding plus output head (once when they are tied)."""
        if self.measured_embedding_params is not None:
            return self.measured_embedding_params
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    def _count(self, active: bool) -> int:
        per_layer = self._attention_params() + self._ffn_params(active) + self.norms_per_layer * self.hidden
        return self.layers * per_layer + self.embedding_params + self.hidden

    @property
    def params(self) -> int:
        """Total parameters (measured from tensors for GGUF files, derived from the config otherwise)."""
        return self.measured_params if self.measured_params is not None else self._count(active=False)

    @property
    def active_params(self) -> int:
        """Parameters used per token: all of them for dense models, routed experts only for MoE."""
        if self.measured_active_params is not None:
            return self.measured_active_params
        if not self.is_moe:
            return self.params
        return self._count(active=True)

    # --- memory ------------------------------------------------------------------------------------

    def weights_bytes(self, precision: Precision) -> int:
        """Bytes of weights at `precision`; exact tensor bytes when it is the GGUF file's own type."""
        if self.file_weights_bytes is not None and precision.name == self.file_type:
            return self.file_weights_bytes
        embed = self.embedding_params
        body = self.params - embed
        return round(body * precision.bits / 8 + embed * precision.embedding_bits / 8)

    def active_weights_bytes(self, precision: Precision) -> int:
        """Bytes of weights read for one decoded token (routed experts only for MoE)."""
        total = self.weights_bytes(precision)
        if not self.is_moe or self.params == 0:
            return total
        return round(total * self.active_params / self.params)

    def kv_bytes_per_token(self, element_bytes: float) -> float:
        """KV-cache bytes one token costs across all layers: 2 x layers x kv_heads x head_dim x bytes."""
        return 2 * self.layers * self.kv_heads * self.attn_head_dim * element_bytes

    def kv_cache_bytes(self, context: int, concurrency: int, element_bytes: float) -> int:
        """KV-cache bytes for `concurrency` sequences of `context` tokens; windowed layers cap at it."""
        per_layer_token = 2 * self.kv_heads * self.attn_head_dim * element_bytes
        local = self.sliding_layers
        window = min(context, self.sliding_window or context)
        tokens = (self.layers - local) * context + local * window
        return round(per_layer_token * tokens * concurrency)

    def attention_flops_per_token(self, position: int) -> float:
        """FLOPs of QK^T and AV for one token attending to `position` earlier tokens (windows honoured)."""
        width = self.heads * self.attn_head_dim
        local = self.sliding_layers
        window = min(position, self.sliding_window or position)
        spans = (self.layers - local) * position + local * window
        return 4.0 * width * spans
