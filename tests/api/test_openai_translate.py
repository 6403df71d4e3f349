"""OpenAI translators, without a server."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from garrison.api.openai import translate
from garrison.api.openai.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingsRequest
from garrison.domain import Completion, EmbeddingResult, Timings, Usage
from garrison.errors import InvalidRequest


def chat(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                                 **fields})


def test_chat_maps_sampling_and_defaults() -> None:
    request = translate.from_openai_chat(chat(temperature=0.2, top_p=0.5, seed=3, stop="END",
                                              presence_penalty=0.5, max_completion_tokens=9, max_tokens=99))
    s = request.sampling
    assert (s.temperature, s.top_p, s.seed, s.stop, s.presence_penalty) == (0.2, 0.5, 3, ["END"], 0.5)
    assert s.max_tokens == 9  # max_completion_tokens wins over the deprecated max_tokens
    defaults = translate.from_openai_chat(chat()).sampling
    assert (defaults.temperature, defaults.top_p, defaults.max_tokens, defaults.repeat_penalty) == (1.0, 1.0, None, 1.0)


def test_chat_content_parts_and_developer_role() -> None:
    body = ChatCompletionRequest.model_validate({"model": "m", "messages": [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": None},
    ]})
    messages = translate.from_openai_chat(body).messages
    assert [(m.role, m.content) for m in messages] == [("system", "be brief"), ("user", "ab"), ("assistant", "")]


@pytest.mark.parametrize("fields, param", [
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function"}},
     "tool_choice"),
    ({"response_format": {"type": "json_schema"}}, "response_format"),
])
def test_chat_rejects_what_it_cannot_honour(fields, param) -> None:
    with pytest.raises(InvalidRequest) as caught:
        translate.from_openai_chat(chat(**fields))
    assert caught.value.param == param


def test_image_parts_are_rejected_with_their_position() -> None:
    body = ChatCompletionRequest.model_validate({"model": "m", "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})
    with pytest.raises(InvalidRequest) as caught:
        translate.from_openai_chat(body)
    assert caught.value.param == "messages.0.content"


def test_json_schema_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    request = translate.from_openai_chat(chat(response_format={"type": "json_schema",
                                                               "json_schema": {"name": "x", "schema": schema}}))
    assert request.response_format.type == "json_schema" and request.response_format.schema == schema
    assert translate.from_openai_chat(chat(response_format={"type": "text"})).response_format is None


def test_completion_prompt_list_suffix_and_default_max_tokens() -> None:
    request = translate.from_openai_completion(CompletionRequest(model="m", prompt=["x"], suffix="y"))
    assert (request.prompt, request.suffix, request.sampling.max_tokens, request.raw) == ("x", "y", 16, True)
    with pytest.raises(InvalidRequest):
        translate.from_openai_completion(CompletionRequest(model="m", prompt=["a", "b"]))


def test_embeddings_input_forms() -> None:
    assert translate.from_openai_embeddings(EmbeddingsRequest(model="e", input="x")).inputs == ["x"]
    assert translate.from_openai_embeddings(EmbeddingsRequest(model="e", input=["x", "y"])).inputs == ["x", "y"]
    with pytest.raises(InvalidRequest):
        translate.from_openai_embeddings(EmbeddingsRequest(model="e", input=[]))


def test_results_translate_to_openai_shapes() -> None:
    result = Completion(request_id="r1", model="m", text="hello", finish_reason="length",
                        usage=Usage(3, 2, 1), timings=Timings(), created=100.0)
    body = translate.to_openai_chat(result)
    assert body["id"] == "chatcmpl-r1" and body["object"] == "chat.completion"
    assert body["choices"][0] == {"index": 0, "message": {"role": "assistant", "content": "hello"},
                                  "logprobs": None, "finish_reason": "length"}
    assert body["usage"]["total_tokens"] == 5 and body["usage"]["prompt_tokens_details"]["cached_tokens"] == 1
    assert translate.to_openai_completion(result)["choices"][0]["text"] == "hello"


def test_embeddings_base64_is_little_endian_float32() -> None:
    result = EmbeddingResult(model="e", vectors=[[0.5, -1.0]], prompt_tokens=2)
    encoded = translate.to_openai_embeddings(result, "base64")["data"][0]["embedding"]
    assert np.frombuffer(base64.b64decode(encoded), dtype="<f4").tolist() == [0.5, -1.0]


def test_chat_tools_choice_history_n_and_logprobs_reach_the_domain() -> None:
    body = chat(
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        tool_choice={"type": "function", "function": {"name": "f"}}, parallel_tool_calls=False,
        n=2, logprobs=True, top_logprobs=3,
        messages=[{"role": "user", "content": "x"},
                  {"role": "assistant", "content": None,
                   "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                  {"role": "tool", "tool_call_id": "call_1", "content": "ok"}],
    )
    request = translate.from_openai_chat(body)
    assert (request.tool_choice.mode, request.tool_choice.name, request.parallel_tool_calls) == ("required", "f", False)
    assert (request.sampling.n, request.sampling.logprobs, request.sampling.top_logprobs) == (2, True, 3)
    assert request.messages[1].tool_calls[0].id == "call_1"  # type: ignore[index]
    assert request.messages[2].tool_call_id == "call_1"  # type: ignore[index]
    assert translate.from_openai_chat(chat()).tool_choice.mode == "none"


def test_completion_token_ids_and_embedding_token_ids() -> None:
    from garrison.api.openai.schemas import CompletionRequest, EmbeddingsRequest

    for prompt in ([1, 2, 3], [[1, 2, 3]]):
        request = translate.from_openai_completion(CompletionRequest(model="m", prompt=prompt, logprobs=2))
        assert request.prompt_tokens == [1, 2, 3] and request.prompt is None and request.sampling.top_logprobs == 2
    with pytest.raises(InvalidRequest, match="check_embedding_ctx_length=False"):
        translate.from_openai_embeddings(EmbeddingsRequest(model="e", input=[[1, 2]]))
