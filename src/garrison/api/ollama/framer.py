"""The Ollama surface's framer: NDJSON lines, the last one `"done": true` with Ollama's metrics."""

from __future__ import annotations

import time
from typing import Any

from garrison.api.errors import ollama_error_body
from garrison.api.ollama import translate
from garrison.api.streaming import ndjson
from garrison.domain import Citations, Completion, GenerationDone, TokenDelta, ToolCallEvent
from garrison.errors import GarrisonError


class OllamaFramer:
    """Frames one /api/chat (`chat=True`) or /api/generate answer; durations count from `started_ns`."""

    media_type = "application/x-ndjson"

    def __init__(self, model: str, *, chat: bool, started_ns: int) -> None:
        self.model, self.chat, self.started_ns = model, chat, started_ns
        self._citations: Citations | None = None

    def _elapsed(self) -> int:
        return time.perf_counter_ns() - self.started_ns

    def chunk(self, delta: TokenDelta) -> list[bytes]:
        if not delta.text:
            return []
        piece = translate.chat_chunk if self.chat else translate.generate_chunk
        return [ndjson(piece(self.model, delta.text, time.time()))]

    def tool_call(self, event: ToolCallEvent) -> list[bytes]:
        return [ndjson(translate.chat_tool_chunk(self.model, [event.call], time.time()))]

    def citations(self, citations: Citations) -> list[bytes]:
        self._citations = citations  # sent on the `"done": true` line, which Ollama clients read whole
        return []

    def done(self, done: GenerationDone) -> list[bytes]:
        final = translate.chat_done if self.chat else translate.generate_done
        body = final(self.model, done, self._elapsed(), time.time())
        return [ndjson({**body, **Citations.fields(self._citations)})]

    def error(self, exc: GarrisonError) -> list[bytes]:
        return [ndjson(ollama_error_body(exc))]

    def whole(self, result: Completion) -> dict[str, Any]:
        whole = translate.to_ollama_chat if self.chat else translate.to_ollama_generate
        return {**whole(result, self._elapsed(), time.time()), **Citations.fields(result.citations)}
