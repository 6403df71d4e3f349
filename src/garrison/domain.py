"""The native request/result types. The OpenAI and Ollama surfaces are translators onto these."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, assert_never

from garrison.errors import InvalidRequest

if TYPE_CHECKING:
    from garrison.security.principal import Principal

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "cancelled"]
ToolChoiceMode = Literal["auto", "none", "required"]


def new_request_id() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True)
class ToolCall:
    """A function call the model made: `arguments` is the JSON text it wrote (valid JSON)."""

    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class ChatMessage:
    """One turn; an assistant turn may carry `tool_calls`, a `tool` turn answers `tool_call_id`."""

    role: Role
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None


@dataclass(slots=True)
class ToolSpec:
    """A function the model may call, with the JSON schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(slots=True)
class ToolChoice:
    """`auto`, `none`, `required`, or one named function (`mode` "required" with `name`)."""

    mode: ToolChoiceMode = "auto"
    name: str | None = None


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
    n: int = 1  # choices decoded together from one prefill; choice i samples with seed + i
    logprobs: bool = False
    top_logprobs: int = 0  # alternatives reported per token (0..20) when `logprobs`
    # max_tokens is a cap, not a reservation (Ollama's num_predict): past the context it means "until full".
    max_tokens_is_cap: bool = False


# Stop strings are scanned after every token on the one decode thread, and a possible partial match is held
# back from the stream, so both their number and their length are bounded. 64 characters covers every end
# marker and role header clients send (`<|im_end|>`, `\n\nHuman:`, a code fence) and keeps the hold-back to a
# few tokens. OpenAI allows 4 stops; Ollama sets no limit, 16 leaves room for the longest Modelfile stop lists.
MAX_STOP_CHARS = 64
MAX_STOP_SEQUENCES_OPENAI = 4
MAX_STOP_SEQUENCES_OLLAMA = 16


def check_stops(stop: str | list[str] | None, limit: int, param: str = "stop") -> list[str]:
    """A request's stop strings as a list, empty ones dropped; InvalidRequest (400) when too many or too long."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > limit:
        raise InvalidRequest(f"'{param}' takes at most {limit} sequences, got {len(stops)}", param=param)
    for index, text in enumerate(stops):
        if len(text) > MAX_STOP_CHARS:
            raise InvalidRequest(
                f"'{param}' sequences are at most {MAX_STOP_CHARS} characters; sequence {index} has {len(text)}",
                param=param,
            )
    return [s for s in stops if s]


@dataclass(slots=True)
class ResponseFormat:
    """Constrained output: any JSON object, or JSON valid against `schema`."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    schema: dict[str, Any] | None = None


@dataclass(slots=True)
class RetrievalOptions:
    """A request's ask to ground the answer in documents: these collections (None: all it may see), k chunks."""

    collections: list[str] | None = None
    k: int | None = None


@dataclass(slots=True)
class GenerationRequest:
    """One text generation: a chat (`messages`) or a raw/FIM completion (`prompt`, `suffix`)."""

    model: str
    messages: list[ChatMessage] | None = None
    prompt: str | None = None
    prompt_tokens: list[int] | None = None  # a prompt given as token ids of the model's own vocabulary
    suffix: str | None = None
    raw: bool = False
    sampling: SamplingParams = field(default_factory=SamplingParams)
    response_format: ResponseFormat | None = None
    # False: the caller takes the whole result at once, so an engine may fetch it in one piece (a remote
    # engine then retries on another replica until it has all of it).
    stream: bool = True
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    parallel_tool_calls: bool = True
    request_id: str = field(default_factory=new_request_id)
    created: float = field(default_factory=time.time)
    documents: RetrievalOptions | None = None  # ground the answer in documents (the retrieval stage)
    # JSON-safe facts stages want in the request's audit record (guard verdicts, document ids + labels);
    # never original secrets, PII or document text.
    annotations: dict[str, Any] = field(default_factory=dict)
    # The highest classification (public < internal < confidential < restricted) of data in the request.
    data_label: str | None = None
    # Who the engine works for, set by the service once authorized: an engine that forwards the request to
    # another garrison (engine = "garrison") signs this identity into its token.
    on_behalf_of: Principal | None = None

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
class TopLogprob:
    token: str
    logprob: float
    bytes: list[int]


@dataclass(slots=True)
class TokenLogprob:
    """One sampled token's log-probability under the model's distribution, and the likeliest alternatives."""

    token: str
    logprob: float
    bytes: list[int]
    top: list[TopLogprob] = field(default_factory=list)


@dataclass(slots=True)
class TokenDelta:
    """A piece of generated text (one or more tokens) of choice `choice`, streamed once safe to emit."""

    text: str
    tokens: int = 1
    choice: int = 0
    logprobs: list[TokenLogprob] | None = None  # one per token in `tokens`, when the request asked


@dataclass(slots=True)
class ToolCallEvent:
    """A complete, parsed tool call of choice `choice`; `index` counts the calls within that choice."""

    call: ToolCall
    index: int = 0
    choice: int = 0


@dataclass(slots=True)
class GenerationDone:
    """The last event of every generation; with n > 1, `choice_reasons` has each choice's finish reason."""

    finish_reason: FinishReason
    usage: Usage
    timings: Timings = field(default_factory=Timings)
    choice_reasons: list[FinishReason] = field(default_factory=list)

    def reason(self, choice: int) -> FinishReason:
        """The finish reason of one choice (choice 0 is `finish_reason`)."""
        if choice < len(self.choice_reasons):
            return self.choice_reasons[choice]
        return self.finish_reason


@dataclass(slots=True, frozen=True)
class Citation:
    """One retrieved chunk the answer was given: its number in the prompt, its document and the quoted span."""

    number: int
    document_id: str
    title: str
    path: str
    collection: str
    page: int | None
    heading: str | None
    label: str
    quote: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number, "document_id": self.document_id, "title": self.title, "path": self.path,
            "collection": self.collection, "page": self.page, "heading": self.heading, "label": self.label,
            "quote": self.quote,
        }


@dataclass(slots=True)
class Citations:
    """The documents an answer is grounded in and its classification; sent just before `GenerationDone`."""

    items: list[Citation]
    classification: str | None

    @staticmethod
    def fields(citations: Citations | None) -> dict[str, Any]:
        """The reply fields both surfaces add to a grounded answer: `citations` and its `classification`."""
        if citations is None:
            return {}
        return {"citations": [c.to_dict() for c in citations.items], "classification": citations.classification}


# Matched exhaustively (`match` + `typing.assert_never`) wherever events are consumed: a new kind is
# added here and to every framer, never left to fall into an `else`.
GenerationEvent = GenerationStarted | TokenDelta | ToolCallEvent | Citations | GenerationDone


@dataclass(slots=True)
class Choice:
    """One choice of a whole result: its text, tool calls, finish reason and (if asked) token logprobs."""

    index: int
    text: str
    finish_reason: FinishReason
    tool_calls: list[ToolCall] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None


@dataclass(slots=True)
class Completion:
    """A whole (non-streamed) generation result; `text`/`finish_reason` are choice 0's."""

    request_id: str
    model: str
    text: str
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    created: float
    citations: Citations | None = None
    choices: list[Choice] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)


def collect(request: GenerationRequest, events: list[GenerationEvent]) -> Completion:
    """Fold a generation's events into a whole result, choice by choice."""
    texts: dict[int, list[str]] = {}
    calls: dict[int, list[ToolCall]] = {}
    logprobs: dict[int, list[TokenLogprob]] = {}
    done: GenerationDone | None = None
    citations: Citations | None = None
    for event in events:
        match event:
            case TokenDelta():
                texts.setdefault(event.choice, []).append(event.text)
                if event.logprobs is not None:
                    logprobs.setdefault(event.choice, []).extend(event.logprobs)
            case ToolCallEvent():
                calls.setdefault(event.choice, []).append(event.call)
            case Citations():
                citations = event
            case GenerationDone():
                done = event
            case GenerationStarted():
                pass
            case _:
                assert_never(event)
    if done is None:
        raise ValueError("a generation ended without GenerationDone")
    n = max(1, request.sampling.n, len(done.choice_reasons))
    choices = [
        Choice(index=i, text="".join(texts.get(i, [])), finish_reason=done.reason(i), tool_calls=calls.get(i, []),
               logprobs=logprobs.get(i, []) if request.sampling.logprobs else None)
        for i in range(n)
    ]
    return Completion(
        request_id=request.request_id, model=request.model, text=choices[0].text, finish_reason=done.finish_reason,
        usage=done.usage, timings=done.timings, created=request.created, citations=citations, choices=choices,
        tool_calls=choices[0].tool_calls,
    )


@dataclass(slots=True)
class EmbeddingRequest:
    model: str
    inputs: list[str]
    request_id: str = field(default_factory=new_request_id)
    annotations: dict[str, Any] = field(default_factory=dict)
    data_label: str | None = None
    on_behalf_of: Principal | None = None  # as on GenerationRequest


@dataclass(slots=True)
class EmbeddingResult:
    model: str
    vectors: list[list[float]]
    prompt_tokens: int
    timings: Timings = field(default_factory=Timings)
