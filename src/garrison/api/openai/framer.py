"""The OpenAI surface's framer: chat/completion chunks as SSE, `data: [DONE]` at the end.

Every choice's stream opens with the assistant role; a tool call is two chunks in OpenAI's shape (its index,
id and name with empty arguments, then the arguments), and each choice ends with its own finish_reason.
"""

from __future__ import annotations

from typing import Any

from garrison.api.errors import openai_error_body
from garrison.api.openai import translate
from garrison.api.streaming import sse
from garrison.domain import Citations, Completion, GenerationDone, GenerationRequest, TokenDelta, ToolCallEvent
from garrison.errors import AuditWriteError, GarrisonError


class OpenAIFramer:
    """Frames one chat (`chat=True`) or text completion, with all of its choices."""

    media_type = "text/event-stream"

    def __init__(self, request: GenerationRequest, *, chat: bool, include_usage: bool = False) -> None:
        self.request, self.chat, self.include_usage = request, chat, include_usage
        self._opened: set[int] = set()
        self._offsets: dict[int, int] = {}  # completions: text offset of each choice, for logprobs
        self._citations: Citations | None = None

    def _open(self, index: int = 0) -> list[bytes]:
        if not self.chat or index in self._opened:
            return []
        self._opened.add(index)
        return [sse(translate.chat_chunk(self.request, {"role": "assistant", "content": ""}, index=index))]

    def chunk(self, delta: TokenDelta) -> list[bytes]:
        i = delta.choice
        if not delta.text and not delta.logprobs:
            return self._open(i)
        if self.chat:
            logprobs = translate.chat_logprobs(delta.logprobs)
            return [*self._open(i), sse(translate.chat_chunk(self.request, {"content": delta.text}, index=i,
                                                             logprobs=logprobs))]
        offset = self._offsets.get(i, 0)
        self._offsets[i] = offset + len(delta.text)
        logprobs = translate.completion_logprobs(delta.logprobs, offset)
        return [sse(translate.completion_chunk(self.request, delta.text, index=i, logprobs=logprobs))]

    def tool_call(self, event: ToolCallEvent) -> list[bytes]:
        i, call = event.choice, event.call
        head = {"index": event.index, "id": call.id, "type": "function",
                "function": {"name": call.name, "arguments": ""}}
        args = {"index": event.index, "function": {"arguments": call.arguments}}
        return [*self._open(i),
                sse(translate.chat_chunk(self.request, {"tool_calls": [head]}, index=i)),
                sse(translate.chat_chunk(self.request, {"tool_calls": [args]}, index=i))]

    def citations(self, citations: Citations) -> list[bytes]:
        self._citations = citations  # sent as the last chunk before [DONE], after finish_reason and usage
        return []

    def done(self, done: GenerationDone) -> list[bytes]:
        frames: list[bytes] = []
        for i in range(max(1, self.request.sampling.n)):
            finish = translate.finish_reason(done.reason(i))
            last = (translate.chat_chunk(self.request, {}, finish, index=i) if self.chat
                    else translate.completion_chunk(self.request, "", finish, index=i))
            frames += [*self._open(i), sse(last)]
        if self.include_usage:
            frames.append(sse(translate.usage_chunk(self.request, done, self.chat)))
        if self._citations is not None:
            frames.append(sse(translate.citations_chunk(self.request, self._citations)))
        return [*frames, sse("[DONE]")]

    def error(self, exc: GarrisonError) -> list[bytes]:
        """The error event, then [DONE]; not when the audit record failed: that stream must not look complete."""
        frames = [*self._open(), sse(openai_error_body(exc))]
        return frames if isinstance(exc, AuditWriteError) else [*frames, sse("[DONE]")]

    def whole(self, result: Completion) -> dict[str, Any]:
        return translate.to_openai_chat(result) if self.chat else translate.to_openai_completion(result)
