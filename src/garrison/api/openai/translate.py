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
    NamedToolChoice,
    SamplingFields,
    ToolIn,
)
from garrison.domain import (
    MAX_STOP_SEQUENCES_OPENAI,
    ChatMessage,
    Choice,
    Citations,
    Completion,
    EmbeddingRequest,
    EmbeddingResult,
    GenerationDone,
    GenerationRequest,
    ResponseFormat,
    RetrievalOptions,
    SamplingParams,
    TokenLogprob,
    ToolCall,
    ToolChoice,
    ToolSpec,
    Usage,
    check_stops,
)
from garrison.errors import InvalidRequest


def _sampling(body: SamplingFields, max_tokens: int | None, top_logprobs: int | None = None) -> SamplingParams:
    """Chat sends `logprobs: true` + `top_logprobs: k`; completions send `logprobs: k` (0..5)."""
    if isinstance(body.logprobs, bool) or body.logprobs is None:
        logprobs, top = bool(body.logprobs), top_logprobs or 0
        if top and not logprobs:
            raise InvalidRequest("top_logprobs requires logprobs: true", param="top_logprobs")
    else:
        if not 0 <= body.logprobs <= 5:
            raise InvalidRequest("logprobs must be between 0 and 5", param="logprobs")
        logprobs, top = True, body.logprobs
    return SamplingParams(
        n=body.n,
        logprobs=logprobs,
        top_logprobs=top,
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
    calls = [ToolCall(id=c.id or f"call_{index}_{i}", name=c.function.name, arguments=c.function.arguments)
             for i, c in enumerate(message.tool_calls or [])]
    return ChatMessage(role=role, content=content or "", tool_calls=calls,
                       tool_call_id=message.tool_call_id, name=message.name if message.role == "tool" else None)


def tool_specs(tools: list[ToolIn] | None) -> list[ToolSpec]:
    return [ToolSpec(name=t.function.name, description=t.function.description,
                     parameters=t.function.parameters or {"type": "object", "properties": {}}) for t in tools or []]


def tool_choice(choice: str | NamedToolChoice | None, has_tools: bool) -> ToolChoice:
    """OpenAI's default is `auto` with tools and `none` without; a named function is a required call of it."""
    if choice is None:
        return ToolChoice("auto" if has_tools else "none")
    if isinstance(choice, str):
        return ToolChoice(choice)  # type: ignore[arg-type]
    name = choice.function.name if choice.function is not None else choice.name
    if not name:
        raise InvalidRequest("tool_choice.function.name is required", param="tool_choice")
    return ToolChoice("required", name)


def from_openai_chat(body: ChatCompletionRequest) -> GenerationRequest:
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
    tools = tool_specs(body.tools)
    return GenerationRequest(
        model=body.model,
        messages=[_message(m, i) for i, m in enumerate(body.messages)],
        sampling=_sampling(body, max_tokens, body.top_logprobs),
        response_format=fmt,
        documents=RetrievalOptions(body.documents.collections, body.documents.k) if body.documents else None,
        tools=tools,
        tool_choice=tool_choice(body.tool_choice, bool(tools)),
        parallel_tool_calls=body.parallel_tool_calls is not False,
    )


def from_openai_completion(body: CompletionRequest) -> GenerationRequest:
    """A prompt as text, or as token ids of the served model's own vocabulary (a list, or a list of one)."""
    prompt: Any = body.prompt
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        prompt = [prompt]
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise InvalidRequest("only a single prompt per request is supported", param="prompt")
        prompt = prompt[0]
    ids = prompt if isinstance(prompt, list) else None
    if ids is not None and not ids:
        raise InvalidRequest("'prompt' must not be empty", param="prompt")
    if body.echo:
        raise InvalidRequest("echo is not supported", param="echo")
    if body.best_of not in (None, 1):
        raise InvalidRequest("only best_of=1 is supported", param="best_of")
    if ids is not None and body.suffix is not None:
        raise InvalidRequest("'suffix' needs a text prompt, not token ids", param="suffix")
    return GenerationRequest(
        model=body.model, prompt=None if ids is not None else prompt, prompt_tokens=ids, suffix=body.suffix,
        raw=True, sampling=_sampling(body, body.max_tokens),
    )


TOKEN_IDS_FOR_EMBEDDINGS = (
    "'input' as token ids is not supported: garrison's embedding model has its own tokenizer, so token ids "
    "made by another one (such as tiktoken's) mean nothing to it. Send the text instead; with LangChain, "
    "create OpenAIEmbeddings(..., check_embedding_ctx_length=False)"
)


def from_openai_embeddings(body: EmbeddingsRequest) -> EmbeddingRequest:
    if isinstance(body.input, list) and any(not isinstance(t, str) for t in body.input):
        raise InvalidRequest(TOKEN_IDS_FOR_EMBEDDINGS, param="input", code="token_ids_not_supported")
    inputs = [body.input] if isinstance(body.input, str) else [str(t) for t in body.input]
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


def finish_reason(reason: str) -> str:
    return reason if reason in ("length", "tool_calls") else "stop"


def tool_call_dict(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def chat_logprobs(logprobs: list[TokenLogprob] | None) -> dict[str, Any] | None:
    """Chat's `logprobs`: one entry per token, with its top alternatives."""
    if logprobs is None:
        return None
    return {"content": [
        {"token": lp.token, "logprob": lp.logprob, "bytes": lp.bytes,
         "top_logprobs": [{"token": t.token, "logprob": t.logprob, "bytes": t.bytes} for t in lp.top]}
        for lp in logprobs
    ], "refusal": None}


def completion_logprobs(logprobs: list[TokenLogprob] | None, offset: int = 0) -> dict[str, Any] | None:
    """The legacy completions shape: parallel lists, alternatives as {token: logprob}."""
    if logprobs is None:
        return None
    offsets = []
    for lp in logprobs:
        offsets.append(offset)
        offset += len(lp.token)
    return {"tokens": [lp.token for lp in logprobs], "token_logprobs": [lp.logprob for lp in logprobs],
            "top_logprobs": [{t.token: t.logprob for t in lp.top} for lp in logprobs], "text_offset": offsets}


def _chat_choice(choice: Choice) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": choice.text or (None if choice.tool_calls else "")}
    if choice.tool_calls:
        message["tool_calls"] = [tool_call_dict(c) for c in choice.tool_calls]
    return {"index": choice.index, "message": message, "logprobs": chat_logprobs(choice.logprobs),
            "finish_reason": finish_reason(choice.finish_reason)}


def _choices(result: Completion) -> list[Choice]:
    return result.choices or [Choice(0, result.text, result.finish_reason, result.tool_calls)]


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
        "choices": [_chat_choice(c) for c in _choices(result)],
        "usage": usage_dict(result.usage),
        **Citations.fields(result.citations),
    }


def to_openai_completion(result: Completion) -> dict[str, Any]:
    return {
        "id": f"cmpl-{result.request_id}",
        "object": "text_completion",
        "created": int(result.created),
        "model": result.model,
        "choices": [{"index": c.index, "text": c.text, "logprobs": completion_logprobs(c.logprobs),
                     "finish_reason": finish_reason(c.finish_reason)} for c in _choices(result)],
        "usage": usage_dict(result.usage),
    }


def chat_chunk(request: GenerationRequest, delta: dict[str, Any], finish: str | None = None, *, index: int = 0,
               logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{request.request_id}",
        "object": "chat.completion.chunk",
        "created": int(request.created),
        "model": request.model,
        "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
    }


def completion_chunk(request: GenerationRequest, text: str, finish: str | None = None, *, index: int = 0,
                     logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": f"cmpl-{request.request_id}",
        "object": "text_completion",
        "created": int(request.created),
        "model": request.model,
        "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}],
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
