"""The OpenAI surface's framer: chat/completion chunks as SSE, `data: [DONE]` at the end."""

from __future__ import annotations

from typing import Any

from garrison.api.errors import openai_error_body
from garrison.api.openai import translate
from garrison.api.streaming import sse
from garrison.domain import Completion, GenerationDone, GenerationRequest, TokenDelta
from garrison.errors import AuditWriteError, GarrisonError


class OpenAIFramer:
    """Frames one chat (`chat=True`) or text completion; a chat stream opens with the assistant role."""

    media_type = "text/event-stream"

    def __init__(self, request: GenerationRequest, *, chat: bool, include_usage: bool = False) -> None:
        self.request, self.chat, self.include_usage = request, chat, include_usage
        self._opened = not chat

    def _open(self) -> list[bytes]:
        if self._opened:
            return []
        self._opened = True
        return [sse(translate.chat_chunk(self.request, {"role": "assistant", "content": ""}))]

    def chunk(self, delta: TokenDelta) -> list[bytes]:
        if not delta.text:
            return self._open()
        if self.chat:
            return [*self._open(), sse(translate.chat_chunk(self.request, {"content": delta.text}))]
        return [sse(translate.completion_chunk(self.request, delta.text))]

    def done(self, done: GenerationDone) -> list[bytes]:
        finish = "length" if done.finish_reason == "length" else "stop"
        last = (translate.chat_chunk(self.request, {}, finish) if self.chat
                else translate.completion_chunk(self.request, "", finish))
        frames = [*self._open(), sse(last)]
        if self.include_usage:
            frames.append(sse(translate.usage_chunk(self.request, done, self.chat)))
        return [*frames, sse("[DONE]")]

    def error(self, exc: GarrisonError) -> list[bytes]:
        """The error event, then [DONE]; not when the audit record failed: that stream must not look complete."""
        frames = [*self._open(), sse(openai_error_body(exc))]
        return frames if isinstance(exc, AuditWriteError) else [*frames, sse("[DONE]")]

    def whole(self, result: Completion) -> dict[str, Any]:
        return translate.to_openai_chat(result) if self.chat else translate.to_openai_completion(result)
