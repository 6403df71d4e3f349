"""Model registry: pinned digests, GGUF metadata, lookups."""

from __future__ import annotations

from pathlib import Path

import pytest

from garrison.engines.gguf import load_gguf
from garrison.errors import ConfigError, ModelIntegrityError, ModelNotFound
from garrison.registry import build_registry, embedded_model_path, sha256_file
from garrison.settings import ModelConfig, load_settings


@pytest.fixture(scope="module")
def gguf() -> Path:
    return embedded_model_path()


def test_embedded_model_metadata(gguf: Path, tmp_path: Path) -> None:
    info = load_gguf(ModelConfig(id="m", path=gguf), load_settings(home=tmp_path))
    assert info.quantization == "Q4_1" and info.architecture == "llama"
    assert info.train_context_length == 8192 and info.context_length == 4096
    assert info.chat_template and "<|im_start|>" in info.chat_template
    assert info.fim is None and info.eos_token == "<|im_end|>" and info.bos_token == "<|im_start|>"


@pytest.mark.parametrize("content", [b"not a model at all", b"GGUF\x03\x00\x00\x00" + b"\xff" * 64, None])
def test_a_file_that_is_no_gguf_is_a_config_error(gguf: Path, tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content if content is not None else gguf.read_bytes()[:2000])  # None: a truncated copy
    with pytest.raises(ConfigError, match="not a readable GGUF"):
        load_gguf(ModelConfig(id="m", path=path), load_settings(home=tmp_path))


def test_pinned_digest_mismatch_is_refused(gguf: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelIntegrityError, match="pins"):
        load_gguf(ModelConfig(id="m", path=gguf, sha256="0" * 64), load_settings(home=tmp_path))


def test_pinned_digest_match_is_accepted(gguf: Path, tmp_path: Path) -> None:
    info = load_gguf(ModelConfig(id="m", path=gguf, sha256=sha256_file(gguf)), load_settings(home=tmp_path))
    assert info.sha256 == sha256_file(gguf)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_gguf(ModelConfig(id="m", path=tmp_path / "nope.gguf"), load_settings(home=tmp_path))


def test_registry_lookup_by_kind(tmp_path: Path) -> None:
    registry = build_registry(load_settings(home=tmp_path))
    assert registry.ids("generate") == ["smollm2-135m-instruct"]
    assert registry.ids("embed") == ["all-minilm-l6-v2"]
    with pytest.raises(ModelNotFound, match="all-minilm-l6-v2"):
        registry.get("all-minilm-l6-v2", "generate")


def test_context_length_is_capped_by_the_model(gguf: Path, tmp_path: Path) -> None:
    info = load_gguf(ModelConfig(id="m", path=gguf, context_length=100_000), load_settings(home=tmp_path))
    assert info.context_length == 8192


def test_models_are_engine_neutral_with_gguf_details_inside(tmp_path: Path) -> None:
    registry = build_registry(load_settings(home=tmp_path))
    chat, embed = registry.get("smollm2-135m-instruct"), registry.get("all-minilm-l6-v2")
    assert (chat.engine, chat.trust, chat.format) == ("llama", "restricted", "gguf")
    assert chat.capabilities == {"chat", "completions", "tools"} and embed.capabilities == {"embeddings"}
    assert chat.details.eos_token == "<|im_end|>" and not hasattr(chat, "eos_token")
    assert embed.engine == "onnx-embeddings" and embed.details.path.suffix == ".onnx"


def test_an_unknown_engine_is_a_config_error_naming_the_known_ones(gguf: Path, tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, models=[{"id": "x", "path": str(gguf), "engine": "nope"}])
    known = "garrison, llama, ollama, onnx-embeddings, openai"
    with pytest.raises(ConfigError, match=f"unknown engine 'nope'; known: {known}"):
        build_registry(settings)


def test_upstream_models_are_described_without_contacting_them(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, default_model=False, engine={"embeddings": False}, models=[
        {"id": "big", "engine": "openai", "upstreams": ["http://gpu1:8000/v1"], "upstream_model": "meta/x",
         "context_length": 8192, "trust": "confidential", "revision": "meta/x"},
        {"id": "emb", "engine": "ollama", "kind": "embed", "upstreams": ["http://ws1:11434"]},
    ])
    big, emb = build_registry(settings)
    assert (big.engine, big.context_length, big.trust, big.digest) == ("openai", 8192, "confidential", "meta/x")
    assert big.capabilities == {"chat", "completions", "fim"} and emb.capabilities == {"embeddings"}
    assert big.details.upstreams == ["http://gpu1:8000/v1"] and emb.kind == "embed"


def test_fields_of_another_engine_are_refused(gguf: Path, tmp_path: Path) -> None:
    wrong_engine = load_settings(home=tmp_path, models=[{"id": "x", "path": str(gguf), "upstreams": ["http://a/v1"]}])
    with pytest.raises(ConfigError, match="no field.* upstreams"):
        build_registry(wrong_engine)
    remote_with_path = load_settings(home=tmp_path, models=[
        {"id": "r", "engine": "openai", "upstreams": ["http://a/v1"], "path": str(gguf)}])
    with pytest.raises(ConfigError, match="model 'r' .*path"):
        build_registry(remote_with_path)
