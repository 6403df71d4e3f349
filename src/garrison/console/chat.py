"""A console question as a normal generation request: the user's principal is authorized, admitted, charged
and audited exactly as an API key would be, and the answer streams as SSE (or arrives whole without JS)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from garrison.api.access import authorize
from garrison.api.context import get_context
from garrison.api.openai.router import _estimate
from garrison.api.streaming import relay, sse
from garrison.console.app import Console
from garrison.console.auth import SignedIn
from garrison.console.conversations import Conversation
from garrison.console.web import CONSOLE_PATH
from garrison.domain import ChatMessage, GenerationDone, GenerationRequest, SamplingParams, TokenDelta
from garrison.errors import GarrisonError, InvalidRequest
from garrison.registry import ModelInfo

MAX_QUESTION_CHARS = 8000


def chat_models(console: Console, who: SignedIn) -> list[ModelInfo]:
    """The generation models this user may use (what the model picker offers)."""
    principal = who.user.principal()
    return [m for m in console.inference.registry if m.kind == "generate" and principal.allows_model(m.id)]


def check_question(text: str) -> str:
    question = text.strip()
    if not question:
        raise InvalidRequest("write a question first", param="message")
    if len(question) > MAX_QUESTION_CHARS:
        raise InvalidRequest(f"a question may have at most {MAX_QUESTION_CHARS} characters", param="message")
    return question


def wants_stream(request: Request) -> bool:
    return request.headers.get("accept", "").startswith("text/event-stream")


async def ask(request: Request, console: Console, who: SignedIn, conv: Conversation, question: str,
              *, new: bool = False) -> Response:
    """Authorize and admit the question as the user, keep it in the conversation, and answer it."""
    ctx = get_context(request)
    history = console.conversations.messages(who.user.id, conv.id)[-console.settings.console.history_messages:]
    messages = [ChatMessage(m.role, m.content) for m in history if m.role in ("user", "assistant")]  # type: ignore[arg-type]
    messages.append(ChatMessage("user", question))
    gen = GenerationRequest(
        model=conv.model, messages=messages,
        sampling=SamplingParams(max_tokens=console.settings.console.max_tokens, temperature=0.7),
    )
    gen.request_id = ctx.request_id if ctx.request_id != "-" else gen.request_id
    ctx.model = gen.model
    ctx.prompt_text = question
    await authorize(request, "chat", model=gen.model, estimated_tokens=_estimate(gen))
    console.inference.model(gen.model, "generate")
    console.conversations.add(who.user.id, conv.id, "user", question, request_id=gen.request_id)
    url = f"{CONSOLE_PATH}/chat/{conv.id}"
    if not wants_stream(request):
        result = await console.inference.complete(gen)
        ctx.prompt_tokens, ctx.completion_tokens = result.usage.prompt_tokens, result.usage.completion_tokens
        ctx.response_text = result.text
        console.conversations.add(who.user.id, conv.id, "assistant", result.text, request_id=gen.request_id)
        return RedirectResponse(url, status_code=303)

    first, events = await console.inference.start(gen)

    def on_delta(delta: TokenDelta) -> bytes | None:
        return sse({"delta": delta.text}) if delta.text else None

    def on_done(done: GenerationDone) -> list[bytes]:
        console.conversations.add(who.user.id, conv.id, "assistant", ctx.response_text or "",
                                  request_id=gen.request_id)
        usage = {"prompt_tokens": done.usage.prompt_tokens, "completion_tokens": done.usage.completion_tokens}
        return [sse({"done": True, "finish_reason": done.finish_reason, "usage": usage}), sse("[DONE]")]

    def on_error(exc: GarrisonError) -> list[bytes]:
        partial = ctx.response_text or ""
        console.conversations.add(who.user.id, conv.id, "assistant", f"{partial}\n\n[error: {exc.message}]".strip(),
                                  request_id=gen.request_id)
        return [sse({"error": {"message": exc.message, "code": exc.code}}), sse("[DONE]")]

    async def body() -> AsyncIterator[bytes]:
        meta: dict[str, Any] = {
            "conversation": conv.id, "url": url, "title": conv.title, "request_id": gen.request_id, "new": new,
        }
        yield f"event: meta\ndata: {json.dumps(meta)}\n\n".encode()
        async for frame in relay(first, events, ctx, on_delta, on_done, on_error):
            yield frame

    return StreamingResponse(body(), media_type="text/event-stream", headers={"cache-control": "no-store"})
