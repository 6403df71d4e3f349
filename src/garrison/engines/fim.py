"""Fill-in-the-middle prompts built from the model's own FIM tokens."""

from __future__ import annotations

from garrison.errors import InvalidRequest
from garrison.registry import ModelInfo


def fim_prompt(info: ModelInfo, prefix: str, suffix: str) -> str:
    """Prefix-suffix-middle order, the layout every common FIM-trained family uses."""
    if info.fim is None:
        raise InvalidRequest(
            f"model '{info.id}' declares no fill-in-the-middle tokens in its GGUF metadata, so 'suffix' "
            "is not supported; use a code model with FIM tokens (e.g. Qwen2.5-Coder, CodeLlama, StarCoder2)",
            param="suffix",
            code="fim_not_supported",
        )
    return f"{info.fim.prefix}{prefix}{info.fim.suffix}{suffix}{info.fim.middle}"
