"""The native request/result types. The OpenAI and Ollama surfaces are translators onto these."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "cancelled"]


def new_request_id() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(slots=True)
class SamplingParams:
    """Sampling options shared by every surface; `None` max_tokens means 'until the context is full'."""

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repeat_penalty: float = 1.0
    ignore_eos: bool = False
    # max_tokens is a cap, not a reservation (Ollama's num_predict): past the context it means "until full".
    max_tokens_is_cap: bool = False


@dataclass(slots=True)
class ResponseFormat:
    """Constrained output: any JSON object, or JSON valid against `schema`."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    schema: dict[str, Any] | None = None


@dataclass(slots=True)
class GenerationRequest:
    """One text generation: a chat (`messages`) or a raw/FIM completion (`prompt`, `suffix`)."""

    model: str
    messages: list[ChatMessage] | None = None
    prompt: str | None = None
    suffix: str | None = None
    raw: bool = False
    sampling: SamplingParams = field(default_factory=SamplingParams)
    response_format: ResponseFormat | None = None
    # False: the caller takes the whole result at once, so an engine may fetch it in one piece (a remote
    # engine then retries on another replica until it has all of it).
    stream: bool = True
    request_id: str = field(default_factory=new_request_id)
    created: float = field(default_factory=time.time)
    # JSON-safe facts stages want in the request's audit record (guard verdicts, document ids + labels);
    # never original secrets, PII or document text.
    annotations: dict[str, Any] = field(default_factory=dict)
    # The highest classification (public < internal < confidential < restricted) of data in the request.
    data_label: str | None = None

    @property
    def is_chat(self) -> bool:
        return self.messages is not None

    @property
    def scope(self) -> Literal["chat", "completions"]:
        """The key scope this request needs."""
        return "chat" if self.is_chat else "completions"


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Timings:
    """Nanosecond durations, as Ollama reports them."""

    queued_ns: int = 0
    load_ns: int = 0
    prompt_eval_ns: int = 0
    eval_ns: int = 0
    total_ns: int = 0


@dataclass(slots=True)
class GenerationStarted:
    """The engine accepted the request: its prompt is `prompt_tokens` tokens (charged however it ends)."""

    prompt_tokens: int
    cached_tokens: int = 0


@dataclass(slots=True)
class TokenDelta:
    """A piece of generated text (one or more tokens) streamed as soon as it is safe to emit."""

    text: str
    tokens: int = 1


@dataclass(slots=True)
class GenerationDone:
    """The last event of every generation."""

    finish_reason: FinishReason
    usage: Usage
    timings: Timings = field(default_factory=Timings)


# Matched exhaustively (`match` + `typing.assert_never`) wherever events are consumed: a new kind is
# added here and to every framer, never left to fall into an `else`.
GenerationEvent = GenerationStarted | TokenDelta | GenerationDone


@dataclass(slots=True)
class Completion:
    """A whole (non-streamed) generation result."""

    request_id: str
    model: str
    text: str
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    created: float


@dataclass(slots=True)
class EmbeddingRequest:
    model: str
    inputs: list[str]
    request_id: str = field(default_factory=new_request_id)
    annotations: dict[str, Any] = field(default_factory=dict)
    data_label: str | None = None


@dataclass(slots=True)
class EmbeddingResult:
    model: str
    vectors: list[list[float]]
    prompt_tokens: int
    timings: Timings = field(default_factory=Timings)
