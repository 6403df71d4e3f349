"""The Ollama upstream, on its native API: `/api/chat`, `/api/generate` (raw prompts, `suffix`), `/api/embed`.

Streams are NDJSON, one object per line, the last with `"done": true` and Ollama's counts and durations.
The model's `context_length` is sent as `options.num_ctx`, since Ollama otherwise uses its own default.
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
from garrison.engines.upstream.errors import ReplicaFailure, embedding_result
from garrison.engines.upstream.integrity import Probe


def _int(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    return value if isinstance(value, int) else 0


def options(request: GenerationRequest, num_ctx: int | None) -> dict[str, Any]:
    s = request.sampling
    out: dict[str, Any] = {"temperature": s.temperature, "top_p": s.top_p, "top_k": s.top_k,
                           "repeat_penalty": s.repeat_penalty}
    if s.max_tokens is not None:
        out["num_predict"] = s.max_tokens
    if s.min_p:
        out["min_p"] = s.min_p
    if s.seed is not None:
        out["seed"] = s.seed
    if s.stop:
        out["stop"] = list(s.stop)
    if s.presence_penalty:
        out["presence_penalty"] = s.presence_penalty
    if s.frequency_penalty:
        out["frequency_penalty"] = s.frequency_penalty
    if num_ctx:
        out["num_ctx"] = num_ctx
    return out


def _done(data: dict[str, Any], request: GenerationRequest, started_ns: int, counted: int) -> GenerationDone:
    prompt = _int(data, "prompt_eval_count")
    completion = _int(data, "eval_count") or counted
    timings = Timings(
        load_ns=_int(data, "load_duration"),
        prompt_eval_ns=_int(data, "prompt_eval_duration"),
        eval_ns=_int(data, "eval_duration"),
        total_ns=time.perf_counter_ns() - started_ns,
    )
    reason: FinishReason = "length" if data.get("done_reason") == "length" else "stop"
    return GenerationDone(reason, Usage(prompt_tokens=prompt, completion_tokens=completion), timings)


def _text(data: dict[str, Any]) -> str:
    message = data.get("message")
    if isinstance(message, dict):
        content = message.get("content")
        return content if isinstance(content, str) else ""
    response = data.get("response")
    return response if isinstance(response, str) else ""


class NdjsonDecoder:
    """Ollama's stream: `{"message": {...}}` or `{"response": "..."}` lines, then one `"done": true`."""

    def __init__(self, request: GenerationRequest, started_ns: int) -> None:
        self.request = request
        self.started_ns = started_ns
        self.finished = False
        self._chunks = 0

    def feed(self, line: bytes) -> list[GenerationEvent]:
        line = line.strip()
        if not line:
            return []
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise ReplicaFailure(f"a stream line is not JSON ({exc})", "protocol") from None
        if not isinstance(data, dict):
            return []
        if "error" in data:
            raise ReplicaFailure(f"error in stream: {data['error']}", "status")
        events: list[GenerationEvent] = []
        text = _text(data)
        if text:
            self._chunks += 1
            events.append(TokenDelta(text))
        if data.get("done"):
            self.finished = True
            events.append(_done(data, self.request, self.started_ns, self._chunks))
        return events

    def finish(self) -> list[GenerationEvent]:
        raise ReplicaFailure("the stream ended before its done line", "protocol")


class OllamaWire:
    """Request bodies and answers of Ollama's native API."""

    name = "ollama"
    probe_path = "/api/tags"
    require_listed = True  # /api/tags lists every model an Ollama can serve

    def __init__(self, context_length: int | None = None) -> None:
        self.context_length = context_length

    def generation(self, request: GenerationRequest, model: str, stream: bool) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"model": model, "stream": stream, "options": options(request, self.context_length)}
        fmt = request.response_format
        if fmt is not None and fmt.type == "json_object":
            body["format"] = "json"
        elif fmt is not None and fmt.type == "json_schema":
            body["format"] = fmt.schema
        if request.messages is not None:
            body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
            return "/api/chat", body
        body["prompt"] = request.prompt or ""
        if request.suffix is not None:
            body["suffix"] = request.suffix  # Ollama builds the FIM prompt with the model's template
        else:
            body["raw"] = True
        return "/api/generate", body

    def decoder(self, request: GenerationRequest, started_ns: int) -> NdjsonDecoder:
        return NdjsonDecoder(request, started_ns)

    def whole(self, data: dict[str, Any], request: GenerationRequest, started_ns: int) -> list[GenerationEvent]:
        if not data.get("done"):
            raise ReplicaFailure("the answer is not done", "protocol")
        text = _text(data)
        done = _done(data, request, started_ns, 1 if text else 0)
        return [TokenDelta(text, tokens=done.usage.completion_tokens), done] if text else [done]

    def embedding(self, request: EmbeddingRequest, model: str) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"model": model, "input": list(request.inputs)}
        if self.context_length:
            body["options"] = {"num_ctx": self.context_length}
        return "/api/embed", body

    def embeddings(self, data: dict[str, Any], request: EmbeddingRequest) -> EmbeddingResult:
        return embedding_result(data.get("embeddings"), data.get("prompt_eval_count"), request)

    def probe(self, data: dict[str, Any], model: str) -> Probe:
        wanted = {model, f"{model}:latest"} if ":" not in model else {model}
        for entry in data.get("models") or []:
            if isinstance(entry, dict) and (entry.get("name") in wanted or entry.get("model") in wanted):
                digest = entry.get("digest")
                return Probe(listed=True, revision=digest if isinstance(digest, str) and digest else None)
        return Probe(listed=False, revision=None)
