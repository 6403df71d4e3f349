"""The OpenAI-compatible upstream: vLLM, TGI, llama-server, llama_cpp.server, another garrison's /v1.

Chat goes to `/chat/completions`, prompts (with `suffix` for fill-in-the-middle) to `/completions`, vectors to
`/embeddings`; streams are SSE (`data: {...}` lines, `data: [DONE]`). Sampling options beyond OpenAI's own
(top_k, min_p, repetition penalty) are sent only when set, under the names vLLM and llama.cpp servers read.
"""

from __future__ import annotations

import json
import time
from typing import Any

from garrison.domain import (
    EmbeddingRequest,
    EmbeddingResult,
    FinishReason,
    GenerationDone,
    GenerationEvent,
    GenerationRequest,
    Timings,
    TokenDelta,
    Usage,
)
from garrison.engines.upstream.errors import ReplicaFailure, embedding_result, upstream_message
from garrison.engines.upstream.integrity import Probe


def _finish(reason: Any) -> FinishReason:
    return "length" if reason == "length" else "stop"


def _estimate_prompt_tokens(request: GenerationRequest) -> int:
    """For upstreams that report no usage: about four characters per token."""
    text = "".join(m.content for m in request.messages or []) + (request.prompt or "") + (request.suffix or "")
    return max(1, len(text) // 4)


def _usage(data: Any, request: GenerationRequest, counted: int) -> Usage:
    if isinstance(data, dict) and isinstance(data.get("prompt_tokens"), int):
        details = data.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        return Usage(
            prompt_tokens=data["prompt_tokens"],
            completion_tokens=int(data.get("completion_tokens") or 0),
            cached_tokens=cached if isinstance(cached, int) else 0,
        )
    return Usage(prompt_tokens=_estimate_prompt_tokens(request), completion_tokens=counted)


def _elapsed(started_ns: int) -> Timings:
    return Timings(total_ns=time.perf_counter_ns() - started_ns)


def sampling_body(request: GenerationRequest) -> dict[str, Any]:
    """Sampling fields, OpenAI's own always and the engines' extensions only when they differ from off."""
    s = request.sampling
    body: dict[str, Any] = {"temperature": s.temperature, "top_p": s.top_p}
    if s.max_tokens is not None:
        body["max_tokens"] = s.max_tokens
    if s.seed is not None:
        body["seed"] = s.seed
    if s.stop:
        body["stop"] = list(s.stop)
    if s.presence_penalty:
        body["presence_penalty"] = s.presence_penalty
    if s.frequency_penalty:
        body["frequency_penalty"] = s.frequency_penalty
    if s.top_k:
        body["top_k"] = s.top_k
    if s.min_p:
        body["min_p"] = s.min_p
    if s.repeat_penalty != 1.0:
        body["repetition_penalty"] = s.repeat_penalty  # vLLM, TGI
        body["repeat_penalty"] = s.repeat_penalty  # llama.cpp servers
    if s.ignore_eos:
        body["ignore_eos"] = True
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema":
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt.schema}}
    return body


class SseDecoder:
    """OpenAI's server-sent events: a delta per `data:` line, usage in the last chunk, then `[DONE]`."""

    def __init__(self, request: GenerationRequest, started_ns: int) -> None:
        self.request = request
        self.started_ns = started_ns
        self.finished = False
        self._reason: FinishReason | None = None
        self._usage: Any = None
        self._chunks = 0

    def feed(self, line: bytes) -> list[GenerationEvent]:
        if not line.startswith(b"data:"):
            return []  # blank separators, `event:`/`id:` fields and `:` keep-alive comments
        payload = line[5:].strip()
        if payload == b"[DONE]":
            return self._done()
        try:
            chunk = json.loads(payload)
        except ValueError as exc:
            raise ReplicaFailure(f"a stream chunk is not JSON ({exc})", "protocol") from None
        if not isinstance(chunk, dict):
            return []
        if "error" in chunk:
            said = upstream_message(payload)
            raise ReplicaFailure(f"error in stream: {said.message}", "status")
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        choices = chunk.get("choices") or []
        if not choices:
            return []
        choice = choices[0]
        if choice.get("finish_reason"):
            self._reason = _finish(choice["finish_reason"])
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
        if not text:
            return []
        self._chunks += 1
        return [TokenDelta(text)]

    def finish(self) -> list[GenerationEvent]:
        if self._reason is None:
            raise ReplicaFailure("the stream ended before the generation finished", "protocol")
        return self._done()

    def _done(self) -> list[GenerationEvent]:
        self.finished = True
        usage = _usage(self._usage, self.request, self._chunks)
        return [GenerationDone(self._reason or "stop", usage, _elapsed(self.started_ns))]


class OpenAIWire:
    """Request bodies and answers of the OpenAI-compatible API."""

    name = "openai"
    probe_path = "/models"
    require_listed = False  # TGI and llama_cpp.server list their own names, not necessarily the one sent

    def generation(self, request: GenerationRequest, model: str, stream: bool) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"model": model, "stream": stream, **sampling_body(request)}
        if stream:
            body["stream_options"] = {"include_usage": True}
        if request.messages is not None:
            body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
            return "/chat/completions", body
        body["prompt"] = request.prompt or ""
        if request.suffix is not None:
            body["suffix"] = request.suffix
        return "/completions", body

    def decoder(self, request: GenerationRequest, started_ns: int) -> SseDecoder:
        return SseDecoder(request, started_ns)

    def whole(self, data: dict[str, Any], request: GenerationRequest, started_ns: int) -> list[GenerationEvent]:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise ReplicaFailure("the answer has no choices", "protocol")
        choice = choices[0]
        message = choice.get("message")
        text = (message.get("content") if isinstance(message, dict) else None) or choice.get("text") or ""
        usage = _usage(data.get("usage"), request, 1 if text else 0)
        done = GenerationDone(_finish(choice.get("finish_reason")), usage, _elapsed(started_ns))
        return [TokenDelta(text, tokens=usage.completion_tokens), done] if text else [done]

    def embedding(self, request: EmbeddingRequest, model: str) -> tuple[str, dict[str, Any]]:
        return "/embeddings", {"model": model, "input": list(request.inputs)}

    def embeddings(self, data: dict[str, Any], request: EmbeddingRequest) -> EmbeddingResult:
        rows = data.get("data")
        if not isinstance(rows, list):
            raise ReplicaFailure("the answer has no data", "protocol")
        ordered = sorted((r for r in rows if isinstance(r, dict)), key=lambda r: r.get("index", 0))
        usage = data.get("usage")
        tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        return embedding_result([r.get("embedding") for r in ordered], tokens, request)

    def probe(self, data: dict[str, Any], model: str) -> Probe:
        for entry in data.get("data") or []:
            if isinstance(entry, dict) and entry.get("id") == model:
                root = entry.get("root")
                return Probe(listed=True, revision=root if isinstance(root, str) and root else None)
        return Probe(listed=False, revision=None)
