"""Ollama translators, without a server: bodies onto the native domain and results back."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from garrison.api.ollama import translate
from garrison.api.ollama.schemas import (
    ChatRequest,
    EmbeddingsRequest,
    EmbedRequest,
    GenerateRequest,
    ShowRequest,
)
from garrison.domain import Completion, EmbeddingResult, GenerationDone, Timings, Usage
from garrison.engines.gguf import FimTokens, GgufModel
from garrison.errors import InvalidRequest
from garrison.registry import ModelFile, ModelInfo

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


def generate(**fields: Any) -> GenerateRequest:
    return GenerateRequest.model_validate({"model": "m", "prompt": "hi", **fields})


def chat(**fields: Any) -> ChatRequest:
    messages = [{"role": "user", "content": "hi"}]
    return ChatRequest.model_validate({"model": "m", "messages": messages, **fields})


def info(model_id: str = "m", kind: str = "generate", fim: FimTokens | None = None,
         **extra: Any) -> ModelInfo:
    if kind == "embed":
        return ModelInfo(
            id=model_id, kind="embed", engine="onnx-embeddings", context_length=extra["context_length"],
            capabilities=frozenset({"embeddings"}), details=ModelFile(Path(f"/srv/models/{model_id}.onnx")),
            format="onnx", size_bytes=1234, digest="ab" * 32, quantization="INT8",
            architecture=extra["architecture"], parameters="22.7M", metadata=extra["metadata"],
        )
    fields: dict[str, Any] = {
        "id": model_id, "path": Path(f"/srv/models/{model_id}.gguf"), "size_bytes": 1234,
        "sha256": "ab" * 32, "quantization": "Q4_1", "context_length": 2048, "train_context_length": 8192,
        "architecture": "llama", "parameters": "135M", "chat_template": "{{ messages }}",
        "eos_token": "<|im_end|>", "fim": fim,
        "metadata": {"general.architecture": "llama", "llama.context_length": 8192,
                     "general.license": "apache-2.0", "general.languages": ["en"]},
    }
    return GgufModel(**{**fields, **extra}).model_info()


def test_stream_is_on_unless_switched_off_and_unknown_fields_are_ignored() -> None:
    assert generate().streaming and chat(stream=None).streaming
    assert not generate(stream=False).streaming
    assert generate(mirostat_whatever=1, options={"num_gpu": 1, "use_mmap": True}).options is not None


def test_ollama_defaults_apply_when_options_are_absent() -> None:
    s = translate.from_ollama_generate(generate()).sampling
    assert (s.temperature, s.top_k, s.top_p, s.repeat_penalty) == (0.8, 40, 0.9, 1.1)
    assert (s.max_tokens, s.seed, s.stop, s.min_p) == (None, None, [], 0.0)


def test_options_map_onto_sampling() -> None:
    options = {"temperature": 0, "top_p": 0.5, "top_k": 7, "seed": 42, "num_predict": 12, "stop": ["\n", ""],
               "repeat_penalty": 1.0, "min_p": 0.05, "presence_penalty": 0.3, "num_ctx": 999_999}
    s = translate.from_ollama_chat(chat(options=options)).sampling
    assert (s.temperature, s.top_p, s.top_k, s.seed, s.max_tokens) == (0.0, 0.5, 7, 42, 12)
    assert (s.stop, s.repeat_penalty, s.min_p, s.presence_penalty) == (["\n"], 1.0, 0.05, 0.3)


@pytest.mark.parametrize("num_predict", [-1, -2, 0])
def test_non_positive_num_predict_means_unlimited(num_predict: int) -> None:
    assert translate.sampling(generate(options={"num_predict": num_predict}).options).max_tokens is None


def test_negative_seed_is_random_and_a_single_stop_string_is_accepted() -> None:
    s = translate.sampling(generate(options={"seed": -1, "stop": "END"}).options)
    assert (s.seed, s.stop) == (None, ["END"])


def test_out_of_range_options_fail_validation() -> None:
    with pytest.raises(ValidationError):
        generate(options={"temperature": -1})
    with pytest.raises(ValidationError):
        generate(options={"top_p": 1.5})


def test_format_json_and_schema() -> None:
    assert translate.from_ollama_chat(chat()).response_format is None
    assert translate.from_ollama_chat(chat(format="")).response_format is None
    assert translate.from_ollama_chat(chat(format="json")).response_format.type == "json_object"  # type: ignore[union-attr]
    fmt = translate.from_ollama_generate(generate(format=SCHEMA)).response_format
    assert fmt is not None and (fmt.type, fmt.schema) == ("json_schema", SCHEMA)
    with pytest.raises(InvalidRequest, match="expected \"json\" or a JSON schema"):
        translate.from_ollama_generate(generate(format="xml"))


def test_generate_applies_the_chat_template_with_system_override() -> None:
    request = translate.from_ollama_generate(generate(system="be terse"))
    assert [(m.role, m.content) for m in request.messages] == [("system", "be terse"), ("user", "hi")]
    assert request.prompt is None and request.is_chat
    plain = translate.from_ollama_generate(generate())
    assert [(m.role, m.content) for m in plain.messages] == [("user", "hi")]


def test_raw_generate_bypasses_the_template() -> None:
    request = translate.from_ollama_generate(generate(raw=True, system="ignored", prompt="<|im_start|>x"))
    assert (request.messages, request.prompt, request.raw) == (None, "<|im_start|>x", True)


def test_suffix_makes_a_fill_in_the_middle_request_and_empty_suffix_does_not() -> None:
    request = translate.from_ollama_generate(generate(prompt="def f(", suffix="):\n    pass"))
    assert (request.prompt, request.suffix, request.messages) == ("def f(", "):\n    pass", None)
    assert translate.from_ollama_generate(generate(suffix="")).suffix is None


@pytest.mark.parametrize(("fields", "message"), [
    ({"images": ["aGk="]}, '"m" does not support images'),
    ({"template": "{{ .Prompt }}"}, "'template' is not supported"),
    ({"context": [1, 2, 3]}, "'context' is not supported"),
    ({"think": True}, '"m" does not support thinking'),
    ({"logprobs": True}, "logprobs are not supported"),
])
def test_generate_rejects_what_garrison_cannot_do(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(message)) as caught:
        translate.from_ollama_generate(generate(**fields))
    assert caught.value.status == 400


def test_chat_maps_roles_and_empty_content() -> None:
    body = chat(messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                          {"role": "assistant"}, {"role": "tool", "content": "t"}], tools=[])
    request = translate.from_ollama_chat(body)
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "s"), ("user", "u"), ("assistant", ""), ("tool", "t")]
    assert request.model == "m"


def test_chat_tools_and_tool_turns_reach_the_domain() -> None:
    request = translate.from_ollama_chat(chat(
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        messages=[{"role": "user", "content": "x"},
                  {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f",
                                                                                     "arguments": {"a": 1}}}]},
                  {"role": "tool", "content": "2", "tool_name": "f"}]))
    assert [t.name for t in request.tools] == ["f"] and request.tool_choice.mode == "auto"
    call = request.messages[1].tool_calls[0]  # type: ignore[index]
    assert (call.name, json.loads(call.arguments)) == ("f", {"a": 1})
    assert (request.messages[2].role, request.messages[2].name) == ("tool", "f")  # type: ignore[index]


def test_a_tool_without_a_function_name_is_a_400() -> None:
    with pytest.raises(InvalidRequest) as caught:
        translate.from_ollama_chat(chat(tools=[{"type": "function"}]))
    assert caught.value.param == "tools.0"


def test_chat_images_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="does not support images"):
        translate.from_ollama_chat(chat(messages=[{"role": "user", "content": "x", "images": ["aGk="]}]))


def test_chat_rejects_unknown_roles() -> None:
    with pytest.raises(ValidationError):
        chat(messages=[{"role": "robot", "content": "x"}])


def test_load_calls_are_recognised() -> None:
    assert translate.is_load(GenerateRequest(model="m")) and translate.is_load(generate(prompt=""))
    assert not translate.is_load(generate()) and not translate.is_load(generate(prompt="", suffix="x"))
    assert translate.is_load(ChatRequest(model="m")) and not translate.is_load(chat())
    body = translate.load_response("m", 0.0, chat=True)
    assert (body["done"], body["done_reason"]) == (True, "load")
    assert body["message"] == {"role": "assistant", "content": ""}
    assert translate.load_response("m", 0.0, chat=False)["response"] == ""


def test_explicit_model_name_overrides_the_body() -> None:
    assert translate.from_ollama_generate(generate(), "resolved").model == "resolved"
    assert translate.from_ollama_embed(EmbedRequest(model="x:latest", input="a"), "x").model == "x"


def test_latest_tag_resolves_to_the_untagged_model_only_when_needed() -> None:
    assert translate.resolve_model("smol:latest", ["smol", "other"]) == "smol"
    assert translate.resolve_model("smol:latest", ["smol:latest", "smol"]) == "smol:latest"
    assert translate.resolve_model("smol:q4", ["smol"]) == "smol:q4"
    assert translate.resolve_model("nope:latest", ["smol"]) == "nope:latest"


def test_embed_inputs() -> None:
    assert translate.from_ollama_embed(EmbedRequest(model="e", input="one")).inputs == ["one"]
    assert translate.from_ollama_embed(EmbedRequest(model="e", input=["a", "b"])).inputs == ["a", "b"]
    assert translate.from_ollama_embed(EmbedRequest(model="e", input="")).inputs == []
    assert translate.from_ollama_embed(EmbedRequest(model="e", input=[])).inputs == []
    with pytest.raises(InvalidRequest, match="non-empty"):
        translate.from_ollama_embed(EmbedRequest(model="e", input=["a", ""]))
    assert translate.from_ollama_embeddings(EmbeddingsRequest(model="e", prompt="p")).inputs == ["p"]
    assert translate.from_ollama_embeddings(EmbeddingsRequest(model="e")).inputs == []


TIMINGS = Timings(queued_ns=5, load_ns=0, prompt_eval_ns=100, eval_ns=900, total_ns=1000)
USAGE = Usage(prompt_tokens=11, completion_tokens=7)


def completion(finish: str = "stop") -> Completion:
    return Completion(request_id="r", model="m", text="Paris.", finish_reason=finish,  # type: ignore[arg-type]
                      usage=USAGE, timings=TIMINGS, created=0.0)


def test_whole_generate_and_chat_answers_carry_ollamas_metrics() -> None:
    body = translate.to_ollama_generate(completion(), total_ns=2000, now=1_700_000_000.5)
    assert body["response"] == "Paris." and body["done"] is True and body["done_reason"] == "stop"
    assert body["created_at"] == "2023-11-14T22:13:20.500000Z"
    assert body["total_duration"] == 2000 and body["load_duration"] == 5
    assert (body["prompt_eval_count"], body["prompt_eval_duration"]) == (11, 100)
    assert (body["eval_count"], body["eval_duration"]) == (7, 900)
    reply = translate.to_ollama_chat(completion("length"), total_ns=10, now=0)
    assert reply["message"] == {"role": "assistant", "content": "Paris."} and "response" not in reply
    assert reply["done_reason"] == "length"
    assert reply["total_duration"] == 1005  # never less than the engine's own time plus its wait


def test_stream_lines() -> None:
    line = translate.generate_chunk("m", "Par", 0)
    assert line == {"model": "m", "created_at": "1970-01-01T00:00:00.000000Z", "response": "Par",
                    "done": False}
    assert translate.chat_chunk("m", "is", 0)["message"] == {"role": "assistant", "content": "is"}
    done = GenerationDone(finish_reason="cancelled", usage=USAGE, timings=TIMINGS)
    last = translate.chat_done("m", done, 3000, 0)
    assert last["done"] is True and last["done_reason"] == "stop" and last["message"]["content"] == ""
    assert last["eval_count"] == 7 and last["total_duration"] == 3000
    assert translate.generate_done("m", done, 3000, 0)["response"] == ""


def test_rfc3339_round_trips() -> None:
    stamp = translate.rfc3339(1_700_000_000.25)
    assert stamp.endswith("Z")
    assert datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() == 1_700_000_000.25


def test_embed_answers() -> None:
    result = EmbeddingResult(model="e", vectors=[[0.6, 0.8], [1.0, 0.0]], prompt_tokens=4, timings=TIMINGS)
    body = translate.to_ollama_embed(result, total_ns=50)
    assert body["embeddings"] == [[0.6, 0.8], [1.0, 0.0]] and body["prompt_eval_count"] == 4
    assert body["total_duration"] == 1000 and body["model"] == "e"
    assert translate.to_ollama_embed(result, 50, dimensions=2)["embeddings"][0] == [0.6, 0.8]
    with pytest.raises(InvalidRequest, match="2-dimensional"):
        translate.to_ollama_embed(result, 50, dimensions=1)
    assert translate.to_ollama_embeddings(result) == {"embedding": [0.6, 0.8]}
    assert translate.to_ollama_embeddings(EmbeddingResult(model="e", vectors=[], prompt_tokens=0)) == {
        "embedding": []}


def test_errors_use_ollamas_wording() -> None:
    missing = translate.model_not_found("x")
    assert (missing.status, missing.message) == (404, 'model "x" not found')
    assert translate.unsupported("e", "chat").message == '"e" does not support chat'


def test_tags_and_ps_entries() -> None:
    tag = translate.to_ollama_tag(info(), 0)
    assert (tag["name"], tag["model"], tag["size"], tag["digest"]) == ("m", "m", 1234, "ab" * 32)
    assert tag["details"] == {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                              "parameter_size": "135M", "quantization_level": "Q4_1"}
    ps = translate.to_ollama_ps(info(), 0)
    assert (ps["size_vram"], ps["context_length"]) == (0, 2048)
    assert ps["expires_at"] == translate.NEVER_EXPIRES
    assert translate.to_ollama_ps(info(n_gpu_layers=-1), 0)["size_vram"] == 1234


# Continue reads /api/show's `parameters` with this pattern; a line that does not match breaks its parser.
CONTINUE_PARAMETER_LINE = re.compile(r'^(\S+)\s+((?:".*")|\S+)$')


def test_show_for_a_chat_model() -> None:
    body = translate.to_ollama_show(info(), 0)
    assert body["capabilities"] == ["completion", "tools"]
    assert body["model_info"]["llama.context_length"] == 2048  # what garrison serves, not the GGUF's 8192
    assert body["model_info"]["general.languages"] == ["en"] and body["license"] == "apache-2.0"
    lines = body["parameters"].split("\n")
    assert all(CONTINUE_PARAMETER_LINE.match(line) for line in lines)
    assert "num_ctx 2048" in lines and 'stop "<|im_end|>"' in lines and "temperature 0.8" in lines
    assert body["template"] == "{{ messages }}" and ".Suffix" not in body["template"]
    assert "FROM m.gguf" in body["modelfile"] and "/srv/models" not in body["modelfile"]


def test_show_for_a_fim_model_advertises_insert_and_a_suffix_template() -> None:
    coder = info("qwen2.5-coder-1.5b", fim=FimTokens("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"))
    body = translate.to_ollama_show(coder, 0)
    assert body["capabilities"] == ["completion", "tools", "insert"]
    # Continue's ollama provider turns FIM on when the template mentions .Suffix.
    assert "<|fim_prefix|>{{ .Prompt }}<|fim_suffix|>{{ .Suffix }}<|fim_middle|>" in body["template"]


def test_show_for_the_embedding_model() -> None:
    embedder = info("all-minilm-l6-v2", kind="embed", architecture="bert", context_length=256,
                    chat_template=None, eos_token="", metadata={"dimensions": 384, "pooling": "mean"})
    body = translate.to_ollama_show(embedder, 0)
    assert body["capabilities"] == ["embedding"] and body["details"]["format"] == "onnx"
    assert body["model_info"] == {"general.architecture": "bert", "bert.embedding_length": 384,
                                  "bert.context_length": 256}
    assert body["parameters"] == "num_ctx 256" and body["template"] == ""


def test_show_accepts_the_older_name_field_and_needs_one() -> None:
    assert ShowRequest(name="m").model_name == "m" and ShowRequest(model="x", name="y").model_name == "x"
    with pytest.raises(ValidationError, match="model is required"):
        ShowRequest()


def test_version_is_one_ollama_clients_accept() -> None:
    body = translate.to_ollama_version()
    assert re.fullmatch(r"0\.\d+\.\d+", body["version"])
    assert body["garrison_version"]
