"""Pure translators between OpenAI bodies and garrison's native types (no I/O, unit-tested alone)."""

from __future__ import annotations

import base64
import time
from typing import Any

import numpy as np

from garrison.api.openai.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingsRequest,
    MessageIn,
    SamplingFields,
)
from garrison.domain import (
    MAX_STOP_SEQUENCES_OPENAI,
    ChatMessage,
    Citations,
    Completion,
    EmbeddingRequest,
    EmbeddingResult,
    GenerationDone,
    GenerationRequest,
    ResponseFormat,
    RetrievalOptions,
    SamplingParams,
    Usage,
    check_stops,
)
from garrison.errors import InvalidRequest


def _sampling(body: SamplingFields, max_tokens: int | None) -> SamplingParams:
    if body.n != 1:
        raise InvalidRequest("only n=1 is supported", param="n")
    if body.logprobs:
        raise InvalidRequest("logprobs are not supported", param="logprobs")
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=body.top_k or 0,
        min_p=body.min_p or 0.0,
        seed=body.seed,
        stop=check_stops(body.stop, MAX_STOP_SEQUENCES_OPENAI),
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        repeat_penalty=body.repeat_penalty or 1.0,
        ignore_eos=body.ignore_eos,
    )


def _message(message: MessageIn, index: int) -> ChatMessage:
    content = message.content
    if isinstance(content, list):
        texts = []
        for part in content:
            if part.type != "text" or part.text is None:
                raise InvalidRequest(
                    f"messages[{index}].content: only text parts are supported, got '{part.type}'",
                    param=f"messages.{index}.content",
                )
            texts.append(part.text)
        content = "".join(texts)
    role = "system" if message.role == "developer" else message.role
    return ChatMessage(role=role, content=content or "")


def from_openai_chat(body: ChatCompletionRequest) -> GenerationRequest:
    if body.tools:
        raise InvalidRequest("tool calling is not supported", param="tools")
    fmt = None
    if body.response_format is not None and body.response_format.type != "text":
        schema = None
        if body.response_format.type == "json_schema":
            spec = body.response_format.json_schema
            if spec is None or spec.schema_ is None:
                raise InvalidRequest(
                    "response_format.json_schema.schema is required for type 'json_schema'",
                    param="response_format",
                )
            schema = spec.schema_
        fmt = ResponseFormat(type=body.response_format.type, schema=schema)
    max_tokens = body.max_completion_tokens or body.max_tokens
    return GenerationRequest(
        model=body.model,
        messages=[_message(m, i) for i, m in enumerate(body.messages)],
        sampling=_sampling(body, max_tokens),
        response_format=fmt,
        documents=RetrievalOptions(body.documents.collections, body.documents.k) if body.documents else None,
    )


def from_openai_completion(body: CompletionRequest) -> GenerationRequest:
    prompt = body.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise InvalidRequest("only a single prompt per request is supported", param="prompt")
        prompt = prompt[0]
    if body.echo:
        raise InvalidRequest("echo is not supported", param="echo")
    if body.best_of not in (None, 1):
        raise InvalidRequest("only best_of=1 is supported", param="best_of")
    return GenerationRequest(
        model=body.model, prompt=prompt, suffix=body.suffix, raw=True, sampling=_sampling(body, body.max_tokens)
    )


def from_openai_embeddings(body: EmbeddingsRequest) -> EmbeddingRequest:
    inputs = [body.input] if isinstance(body.input, str) else list(body.input)
    if not inputs or any(not isinstance(t, str) or not t for t in inputs):
        raise InvalidRequest("'input' must be a non-empty string or a list of non-empty strings", param="input")
    return EmbeddingRequest(model=body.model, inputs=inputs)


def usage_dict(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def citations_chunk(request: GenerationRequest, citations: Citations) -> dict[str, Any]:
    """The stream chunk that carries the citations (no choices, like the usage chunk), before [DONE]."""
    return {
        "id": f"chatcmpl-{request.request_id}",
        "object": "chat.completion.chunk",
        "created": int(request.created),
        "model": request.model,
        "choices": [],
        **Citations.fields(citations),
    }


def to_openai_chat(result: Completion) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{result.request_id}",
        "object": "chat.completion",
        "created": int(result.created),
        "model": result.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": result.text},
            "logprobs": None,
            "finish_reason": _finish(result.finish_reason),
        }],
        "usage": usage_dict(result.usage),
        **Citations.fields(result.citations),
    }


def to_openai_completion(result: Completion) -> dict[str, Any]:
    return {
        "id": f"cmpl-{result.request_id}",
        "object": "text_completion",
        "created": int(result.created),
        "model": result.model,
        "choices": [{"index": 0, "text": result.text, "logprobs": None,
                     "finish_reason": _finish(result.finish_reason)}],
        "usage": usage_dict(result.usage),
    }


def chat_chunk(request: GenerationRequest, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{request.request_id}",
        "object": "chat.completion.chunk",
        "created": int(request.created),
        "model": request.model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def completion_chunk(request: GenerationRequest, text: str, finish: str | None = None) -> dict[str, Any]:
    return {
        "id": f"cmpl-{request.request_id}",
        "object": "text_completion",
        "created": int(request.created),
        "model": request.model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
    }


def usage_chunk(request: GenerationRequest, done: GenerationDone, chat: bool) -> dict[str, Any]:
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{request.request_id}",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(request.created),
        "model": request.model,
        "choices": [],
        "usage": usage_dict(done.usage),
    }


def to_openai_embeddings(result: EmbeddingResult, encoding_format: str) -> dict[str, Any]:
    data = []
    for index, vector in enumerate(result.vectors):
        embedding: list[float] | str = vector
        if encoding_format == "base64":
            embedding = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return {
        "object": "list",
        "data": data,
        "model": result.model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }


def to_openai_model(model_id: str, created: float | None = None) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": int(created or time.time()), "owned_by": "garrison"}
