"""A console question is a normal generation request: it goes through the same pipeline as the API, with
the signed-in user's principal as the caller (authorized, admitted, charged and audited like a key), and
its answer streams as SSE through the console's framer (or arrives whole, then a redirect, without JS)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from garrison.api.deps import bind_generation
from garrison.api.streaming import sse
from garrison.console.app import Console
from garrison.console.auth import SignedIn
from garrison.console.conversations import Conversation
from garrison.console.web import CONSOLE_PATH
from garrison.domain import (
    ChatMessage,
    Citations,
    Completion,
    GenerationDone,
    GenerationRequest,
    SamplingParams,
    TokenDelta,
    ToolCallEvent,
)
from garrison.errors import AuditWriteError, GarrisonError, InvalidRequest
from garrison.registry import ModelInfo

MAX_QUESTION_CHARS = 8000


def chat_models(console: Console, who: SignedIn) -> list[ModelInfo]:
    """The generation models this user may use (what the model picker offers), knowledge models included.

    A knowledge model is offered only when the user may read every collection it retrieves from (else the
    retrieval stage would refuse the question).
    """
    principal = who.user.principal()

    def usable(m: ModelInfo) -> bool:
        collections = m.metadata.get("knowledge", {}).get("collections", [])
        return principal.allows_model(m.id) and all(principal.allows_collection(c) for c in collections)

    return [m for m in console.inference.registry if m.kind == "generate" and usable(m)]


def kept_citations(citations: Citations | None) -> tuple[list[dict[str, Any]], str | None]:
    """What a conversation keeps of an answer's citations: the documents and labels, not the quoted text."""
    if citations is None:
        return [], None
    kept = [{k: v for k, v in c.to_dict().items() if k != "quote"} for c in citations.items]
    return kept, citations.classification


def check_question(text: str) -> str:
    question = text.strip()
    if not question:
        raise InvalidRequest("write a question first", param="message")
    if len(question) > MAX_QUESTION_CHARS:
        raise InvalidRequest(f"a question may have at most {MAX_QUESTION_CHARS} characters", param="message")
    return question


def wants_stream(request: Request) -> bool:
    return request.headers.get("accept", "").startswith("text/event-stream")


class ConsoleFramer:
    """The console's wire format: a `meta` event, `{"delta"}` pieces, `{"done"}` or `{"error"}`, `[DONE]`.

    It keeps the conversation: the question once the pipeline has admitted it (the first frame), the
    answer (or what came of it) when the stream ends, with its citations and classification (`label`).
    """

    media_type = "text/event-stream"

    def __init__(self, console: Console, who: SignedIn, conv: Conversation, question: str, request_id: str,
                 *, new: bool) -> None:
        self.console, self.who, self.conv, self.question, self.request_id = console, who, conv, question, request_id
        self.new = new
        self._parts: list[str] = []
        self._opened = False
        self._citations: Citations | None = None

    def _keep(self, role: str, text: str, citations: Citations | None = None) -> None:
        kept, label = kept_citations(citations)
        self.console.conversations.add(self.who.user.id, self.conv.id, role, text, request_id=self.request_id,
                                       citations=kept, label=label)

    def _open(self) -> list[bytes]:
        if self._opened:
            return []
        self._opened = True
        self._keep("user", self.question)
        meta: dict[str, Any] = {
            "conversation": self.conv.id, "url": f"{CONSOLE_PATH}/chat/{self.conv.id}", "title": self.conv.title,
            "request_id": self.request_id, "new": self.new,
        }
        return [f"event: meta\ndata: {json.dumps(meta)}\n\n".encode()]

    def chunk(self, delta: TokenDelta) -> list[bytes]:
        if not delta.text:
            return self._open()
        self._parts.append(delta.text)
        return [*self._open(), sse({"delta": delta.text})]

    def tool_call(self, event: ToolCallEvent) -> list[bytes]:
        """The console offers the model no tools, so no call can arrive; nothing to frame."""
        return []

    def citations(self, citations: Citations) -> list[bytes]:
        self._citations = citations  # sent with `done`, once the answer is whole
        return []

    def done(self, done: GenerationDone) -> list[bytes]:
        frames = self._open()
        self._keep("assistant", "".join(self._parts), self._citations)
        usage = {"prompt_tokens": done.usage.prompt_tokens, "completion_tokens": done.usage.completion_tokens}
        kept, label = kept_citations(self._citations)
        end = {"done": True, "finish_reason": done.finish_reason, "usage": usage, "citations": kept, "label": label}
        return [*frames, sse(end), sse("[DONE]")]

    def error(self, exc: GarrisonError) -> list[bytes]:
        frames = self._open()
        self._keep("assistant", f"{''.join(self._parts)}\n\n[error: {exc.message}]".strip())
        frames.append(sse({"error": {"message": exc.message, "code": exc.code}}))
        return frames if isinstance(exc, AuditWriteError) else [*frames, sse("[DONE]")]

    def whole(self, result: Completion) -> dict[str, Any]:
        kept, label = kept_citations(result.citations)
        return {"text": result.text, "finish_reason": result.finish_reason, "citations": kept, "label": label}


async def ask(request: Request, console: Console, who: SignedIn, conv: Conversation, question: str,
              *, new: bool = False) -> Response:
    """Run the question (with the conversation so far) through the pipeline as the user, and answer it."""
    history = console.conversations.messages(who.user.id, conv.id)[-console.settings.console.history_messages:]
    messages = [ChatMessage(m.role, m.content) for m in history if m.role in ("user", "assistant")]  # type: ignore[arg-type]
    messages.append(ChatMessage("user", question))
    gen = GenerationRequest(
        model=conv.model, messages=messages,
        sampling=SamplingParams(max_tokens=console.settings.console.max_tokens, temperature=0.7),
    )
    generation = bind_generation(request, console.inference, who.user.principal())
    gen.request_id = generation.origin.request_id
    if wants_stream(request):
        framer = ConsoleFramer(console, who, conv, question, gen.request_id, new=new)
        return await generation.respond(gen, framer, stream=True)
    result = await console.inference.complete(gen, generation.caller, generation.origin)
    console.conversations.add(who.user.id, conv.id, "user", question, request_id=gen.request_id)
    kept, label = kept_citations(result.citations)
    console.conversations.add(who.user.id, conv.id, "assistant", result.text, request_id=gen.request_id,
                              citations=kept, label=label)
    return RedirectResponse(f"{CONSOLE_PATH}/chat/{conv.id}", status_code=303)
