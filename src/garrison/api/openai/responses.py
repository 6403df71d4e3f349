"""OpenAI's Responses API (`POST /v1/responses`) as a translator and a framer over the one pipeline.

Input is text or items (messages, `function_call`, `function_call_output`), `instructions` becomes the
system turn, function tools map onto garrison's tools. `store` is off by default; a stored response is kept
in memory under the caller's key only, so `previous_response_id` continues a conversation for that key.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from garrison.api.errors import openai_error_body
from garrison.api.openai.translate import tool_choice as chat_tool_choice
from garrison.domain import (
    ChatMessage,
    Citations,
    Completion,
    GenerationDone,
    GenerationRequest,
    SamplingParams,
    TokenDelta,
    ToolCall,
    ToolCallEvent,
    ToolChoice,
    ToolSpec,
    Usage,
)
from garrison.errors import GarrisonError, InvalidRequest, NotFound

# Responses kept for previous_response_id (per server, oldest dropped first).
MAX_STORED = 1000


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FunctionTool(_Body):
    type: str
    name: str | None = None
    description: str = ""
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedChoice(_Body):
    type: Literal["function"]
    name: str


class ResponsesRequest(_Body):
    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    stream: bool = False
    store: bool = False
    previous_response_id: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedChoice | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    max_output_tokens: int | None = Field(default=None, ge=1)
    metadata: dict[str, Any] | None = None
    user: str | None = None


@dataclass(slots=True)
class StoredResponse:
    key_id: str
    messages: list[ChatMessage]
    body: dict[str, Any]


@dataclass(slots=True)
class ResponseStore:
    """Stored responses by id; one key never reads another key's."""

    items: OrderedDict[str, StoredResponse] = field(default_factory=OrderedDict)

    def put(self, response_id: str, stored: StoredResponse) -> None:
        self.items[response_id] = stored
        while len(self.items) > MAX_STORED:
            self.items.popitem(last=False)

    def get(self, response_id: str, key_id: str) -> StoredResponse:
        stored = self.items.get(response_id)
        if stored is None or stored.key_id != key_id:
            raise NotFound(f"Response with id '{response_id}' not found.", param="previous_response_id")
        return stored


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text", "text"):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise InvalidRequest(f"{where}: only text content is supported, got '{kind}'", param="input")
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise InvalidRequest(f"{where}: content must be text or a list of text parts", param="input")


def _items(items: list[dict[str, Any]]) -> list[ChatMessage]:
    messages: list[ChatMessage] = []
    for i, item in enumerate(items):
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise InvalidRequest(f"input[{i}].role must be user, system, developer or assistant", param="input")
            role = "system" if role == "developer" else role
            messages.append(ChatMessage(role=role, content=_text(item.get("content", ""), f"input[{i}]")))  # type: ignore[arg-type]
        elif kind == "function_call":
            call = ToolCall(id=str(item.get("call_id") or item.get("id") or f"call_{i}"),
                            name=str(item.get("name", "")), arguments=str(item.get("arguments", "")))
            if messages and messages[-1].role == "assistant" and not messages[-1].content:
                messages[-1].tool_calls.append(call)
            else:
                messages.append(ChatMessage("assistant", "", tool_calls=[call]))
        elif kind == "function_call_output":
            output = item.get("output", "")
            messages.append(ChatMessage("tool", output if isinstance(output, str) else _text(output, f"input[{i}]"),
                                        tool_call_id=str(item.get("call_id", ""))))
        else:
            raise InvalidRequest(f"input[{i}]: item type '{kind}' is not supported", param="input")
    return messages


def from_responses(body: ResponsesRequest, history: list[ChatMessage] | None = None) -> GenerationRequest:
    """The domain request: stored history, then instructions as the system turn, then this input."""
    messages = list(history or [])
    new = [ChatMessage("user", body.input)] if isinstance(body.input, str) else _items(body.input)
    if body.instructions:
        messages = [m for m in messages if m.role != "system"]
        messages.insert(0, ChatMessage("system", body.instructions))
    messages += new
    if not any(m.role != "system" for m in messages):
        raise InvalidRequest("input must hold at least one message", param="input")
    tools = []
    for i, tool in enumerate(body.tools or []):
        if tool.type != "function" or not tool.name:
            raise InvalidRequest(f"tools[{i}]: only function tools are supported, got '{tool.type}'",
                                 param=f"tools.{i}")
        tools.append(ToolSpec(name=tool.name, description=tool.description,
                              parameters=tool.parameters or {"type": "object", "properties": {}}))
    choice = body.tool_choice
    return GenerationRequest(
        model=body.model,
        messages=messages,
        sampling=SamplingParams(max_tokens=body.max_output_tokens,
                                temperature=1.0 if body.temperature is None else body.temperature,
                                top_p=1.0 if body.top_p is None else body.top_p),
        tools=tools,
        tool_choice=ToolChoice("required", choice.name) if isinstance(choice, NamedChoice)
        else chat_tool_choice(choice, bool(tools)),
        parallel_tool_calls=body.parallel_tool_calls is not False,
    )


def _usage(usage: Usage) -> dict[str, Any]:
    return {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens, "input_tokens_details": {"cached_tokens": usage.cached_tokens},
            "output_tokens_details": {"reasoning_tokens": 0}}


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" or text else []
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def _call_item(item_id: str, call: ToolCall, status: str, arguments: str | None = None) -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call.id, "name": call.name,
            "arguments": call.arguments if arguments is None else arguments, "status": status}


class ResponsesFramer:
    """Frames one response: a whole `response` object, or the Responses stream of typed events."""

    media_type = "text/event-stream"

    def __init__(self, body: ResponsesRequest, request: GenerationRequest, store: ResponseStore,
                 key_id: str) -> None:
        self.body, self.request, self.store, self.key_id = body, request, store, key_id
        self.id = f"resp_{uuid.uuid4().hex}"
        self.created = int(time.time())
        self._seq = 0
        self._output: list[dict[str, Any]] = []
        self._text_item: dict[str, Any] | None = None
        self._text = ""
        self._calls: list[ToolCall] = []
        self._citations: Citations | None = None

    # -- the response object --------------------------------------------------------------------

    def _response(self, status: str, output: list[dict[str, Any]], usage: Usage | None = None,
                  incomplete: str | None = None) -> dict[str, Any]:
        body = self.body
        return {
            "id": self.id, "object": "response", "created_at": self.created, "status": status,
            "model": body.model, "output": output, "error": None,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "instructions": body.instructions, "metadata": body.metadata or {},
            "parallel_tool_calls": body.parallel_tool_calls is not False,
            "previous_response_id": body.previous_response_id, "store": body.store,
            "temperature": body.temperature, "top_p": body.top_p, "max_output_tokens": body.max_output_tokens,
            "tool_choice": body.tool_choice if isinstance(body.tool_choice, str) or body.tool_choice is None
            else body.tool_choice.model_dump(),
            "tools": [t.model_dump(exclude_none=True) for t in body.tools or []],
            "text": {"format": {"type": "text"}}, "truncation": "disabled",
            "usage": _usage(usage) if usage is not None else None,
        }

    def _remember(self, text: str, calls: list[ToolCall], response: dict[str, Any]) -> None:
        if not self.body.store:
            return
        reply = ChatMessage("assistant", text, tool_calls=list(calls))
        self.store.put(self.id, StoredResponse(self.key_id, [*(self.request.messages or []), reply], response))

    def whole(self, result: Completion) -> dict[str, Any]:
        output: list[dict[str, Any]] = []
        if result.text or not result.tool_calls:
            output.append(_message_item(f"msg_{uuid.uuid4().hex}", result.text, "completed"))
        output += [_call_item(f"fc_{uuid.uuid4().hex}", c, "completed") for c in result.tool_calls]
        incomplete = "max_output_tokens" if result.finish_reason == "length" else None
        response = {**self._response("incomplete" if incomplete else "completed", output, result.usage, incomplete),
                    **Citations.fields(result.citations)}
        self._remember(result.text, result.tool_calls, response)
        return response

    # -- the stream -----------------------------------------------------------------------------

    def _event(self, kind: str, **data: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **data}
        self._seq += 1
        return f"event: {kind}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()

    def _start(self) -> list[bytes]:
        if self._seq:
            return []
        created = self._response("in_progress", [])
        return [self._event("response.created", response=created),
                self._event("response.in_progress", response=created)]

    def chunk(self, delta: TokenDelta) -> list[bytes]:
        frames = self._start()
        if not delta.text:
            return frames
        if self._text_item is None:
            self._text_item = _message_item(f"msg_{uuid.uuid4().hex}", "", "in_progress")
            self._output.append(self._text_item)
            index = len(self._output) - 1
            frames += [self._event("response.output_item.added", output_index=index, item=self._text_item),
                       self._event("response.content_part.added", item_id=self._text_item["id"],
                                   output_index=index, content_index=0,
                                   part={"type": "output_text", "text": "", "annotations": []})]
        self._text += delta.text
        index = self._output.index(self._text_item)
        return [*frames, self._event("response.output_text.delta", item_id=self._text_item["id"],
                                     output_index=index, content_index=0, delta=delta.text, logprobs=[])]

    def _close_text(self) -> list[bytes]:
        item = self._text_item
        if item is None or item["status"] == "completed":
            return []
        index = self._output.index(item)
        part = {"type": "output_text", "text": self._text, "annotations": []}
        item.update(_message_item(item["id"], self._text, "completed"))
        return [self._event("response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                            text=self._text, logprobs=[]),
                self._event("response.content_part.done", item_id=item["id"], output_index=index,
                            content_index=0, part=part),
                self._event("response.output_item.done", output_index=index, item=item)]

    def tool_call(self, event: ToolCallEvent) -> list[bytes]:
        frames = [*self._start(), *self._close_text()]
        call = event.call
        self._calls.append(call)
        item = _call_item(f"fc_{uuid.uuid4().hex}", call, "in_progress", arguments="")
        self._output.append(item)
        index = len(self._output) - 1
        frames.append(self._event("response.output_item.added", output_index=index, item=dict(item)))
        frames.append(self._event("response.function_call_arguments.delta", item_id=item["id"],
                                  output_index=index, delta=call.arguments))
        frames.append(self._event("response.function_call_arguments.done", item_id=item["id"],
                                  output_index=index, arguments=call.arguments))
        item.update(arguments=call.arguments, status="completed")
        frames.append(self._event("response.output_item.done", output_index=index, item=item))
        return frames

    def citations(self, citations: Citations) -> list[bytes]:
        self._citations = citations  # carried on the final response object, as on a whole response
        return []

    def done(self, done: GenerationDone) -> list[bytes]:
        frames = [*self._start(), *self._close_text()]
        incomplete = "max_output_tokens" if done.finish_reason == "length" else None
        response = {**self._response("incomplete" if incomplete else "completed", self._output, done.usage,
                                     incomplete), **Citations.fields(self._citations)}
        self._remember(self._text, self._calls, response)
        return [*frames, self._event("response.incomplete" if incomplete else "response.completed",
                                     response=response)]

    def error(self, exc: GarrisonError) -> list[bytes]:
        error = openai_error_body(exc)["error"]
        return [*self._start(), self._event("error", code=error.get("code"), message=error.get("message"),
                                            param=error.get("param"))]
