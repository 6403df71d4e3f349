"""Fill-in-the-middle prompt construction for each family, on ModelInfo objects built here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from garrison.domain import GenerationRequest
from garrison.engines.fim import fim_prompt, fim_template, supports_fim
from garrison.engines.gguf import FimTokens, GgufModel
from garrison.engines.prompt import build_prompt
from garrison.errors import InvalidRequest
from garrison.registry import embedding_model_info

PREFIX = "def add(a, b):\n    "
SUFFIX = "\n\nprint(add(1, 2))\n"


def model(model_id: str, fim: tuple[str, str, str] | None = None, arch: str = "llama",
          **metadata: Any) -> GgufModel:
    return GgufModel(
        id=model_id, path=Path(f"/models/{model_id}.gguf"), size_bytes=1, sha256="0" * 64,
        quantization="Q4_K_M", context_length=4096, architecture=arch,
        fim=FimTokens(*fim) if fim else None, metadata={"general.architecture": arch, **metadata},
    )


# The FIM tokens each family's GGUF declares, as llama.cpp's vocabulary spells them.
QWEN = model("qwen2.5-coder-1.5b", ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"), "qwen2")
STARCODER2 = model("starcoder2-3b", ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"), "starcoder2")
CODELLAMA = model("codellama-7b", ("▁<PRE>", "▁<SUF>", "▁<MID>"))
CODESTRAL = model("codestral-22b", ("[PREFIX]", "[SUFFIX]", "[MIDDLE]"))
DEEPSEEK = model("deepseek-coder-1.3b", ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"))


@pytest.mark.parametrize(("info", "family", "expected"), [
    (QWEN, "qwen2.5-coder", f"<|fim_prefix|>{PREFIX}<|fim_suffix|>{SUFFIX}<|fim_middle|>"),
    (STARCODER2, "starcoder2", f"<fim_prefix>{PREFIX}<fim_suffix>{SUFFIX}<fim_middle>"),
    (CODELLAMA, "codellama", f"<PRE> {PREFIX} <SUF>{SUFFIX} <MID>"),
    (CODESTRAL, "codestral", f"[SUFFIX]{SUFFIX}[PREFIX]{PREFIX}"),
    (DEEPSEEK, "deepseek-coder", f"<｜fim▁begin｜>{PREFIX}<｜fim▁hole｜>{SUFFIX}<｜fim▁end｜>"),
])
def test_each_family_uses_its_own_layout(info: GgufModel, family: str, expected: str) -> None:
    assert fim_template(info).family == family  # type: ignore[union-attr]
    assert fim_prompt(info, PREFIX, SUFFIX) == expected
    assert supports_fim(info)


@pytest.mark.parametrize(("model_id", "metadata", "family", "expected_start"), [
    ("my-coder", {"general.name": "Qwen2.5 Coder 7B Instruct"}, "qwen2.5-coder", "<|fim_prefix|>"),
    ("sc", {"general.basename": "starcoder2"}, "starcoder2", "<fim_prefix>"),
    ("CodeLlama-13b-Instruct", {}, "codellama", "<PRE> "),
    ("cl", {"general.name": "Code Llama 7B"}, "codellama", "<PRE> "),
    ("mistral-fim", {"general.name": "Codestral 22B v0.1"}, "codestral", "[SUFFIX]"),
    ("ds", {"general.name": "DeepSeek-Coder-V2-Lite-Base"}, "deepseek-coder", "<｜fim▁begin｜>"),
])
def test_family_is_found_by_name_when_the_gguf_declares_no_fim_tokens(
    model_id: str, metadata: dict[str, str], family: str, expected_start: str
) -> None:
    info = model(model_id, None, **metadata)
    assert fim_template(info).family == family  # type: ignore[union-attr]
    assert fim_prompt(info, "p", "s").startswith(expected_start)


def test_unknown_family_with_gguf_fim_tokens_uses_them_in_prefix_suffix_middle_order() -> None:
    info = model("granite-code-3b", ("<fim_pre>", "<fim_suf>", "<fim_mid>"), "granite")
    assert fim_template(info).family == "gguf"  # type: ignore[union-attr]
    assert fim_prompt(info, "a{b}", "c{0}") == "<fim_pre>a{b}<fim_suf>c{0}<fim_mid>"


def test_declared_tokens_win_over_the_name() -> None:
    info = model("deepseek-coder-renamed", ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"), "qwen2")
    assert fim_prompt(info, "p", "s") == "<|fim_prefix|>p<|fim_suffix|>s<|fim_middle|>"


def test_braces_in_code_are_kept_verbatim() -> None:
    expected = "<|fim_prefix|>x = {'a': 1}<|fim_suffix|>f'{x}'<|fim_middle|>"
    assert fim_prompt(QWEN, "x = {'a': 1}", "f'{x}'") == expected


def test_model_without_fim_is_a_clear_400_naming_it() -> None:
    names = {"general.name": "SmolLM2 135M", "general.basename": "smollm2"}
    info = model("smollm2-135m-instruct", None, **names)
    assert not supports_fim(info)
    with pytest.raises(InvalidRequest) as caught:
        fim_prompt(info, "p", "s")
    assert caught.value.status == 400
    assert caught.value.code == "fim_not_supported"
    assert caught.value.param == "suffix"
    assert '"smollm2-135m-instruct"' in caught.value.message
    assert "garrison models add" in caught.value.message


def test_fim_is_a_capability_of_gguf_models_only() -> None:
    assert "fim" in QWEN.model_info().capabilities and "fim" not in model("plain").model_info().capabilities
    assert "fim" not in embedding_model_info().capabilities  # embedding models never do FIM


def test_build_prompt_routes_a_suffix_through_fim_and_adds_no_template_stops() -> None:
    prompt, stops = build_prompt(QWEN, GenerationRequest(model=QWEN.id, prompt="a", suffix="b", raw=True))
    assert (prompt, stops) == ("<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>", [])
