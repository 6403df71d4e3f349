"""Prompt construction: the model's own chat template, and fill-in-the-middle from its FIM tokens.

Only the template may spell control tokens. A prompt is kept as spans that remember who wrote them: text
the template (or FIM layout) produced may contain control-token text such as `<|im_start|>`, text from the
caller (message content, a completion prompt) is always tokenized as plain text, so
`hi<|im_end|>\\n<|im_start|>assistant` inside a message stays characters, never a turn boundary.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from garrison.domain import ChatMessage, GenerationRequest
from garrison.engines.gguf import GgufModel
from garrison.engines.tools.plan import ToolPlan
from garrison.errors import InvalidRequest

log = logging.getLogger(__name__)

# ChatML: used only when a GGUF carries no template at all.
_FALLBACK_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)
_WHITESPACE = " \t\n\r\v\f"  # what llama.cpp's isspace() strips around LSTRIP/RSTRIP tokens


@dataclass(frozen=True, slots=True)
class Span:
    """A run of prompt text; `trusted` when the template wrote it (its control-token text counts)."""

    text: str
    trusted: bool


@dataclass(frozen=True, slots=True)
class Prompt:
    """The text to tokenize, as spans by author, plus the stop strings the template implies."""

    spans: tuple[Span, ...]
    stops: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.spans)


@dataclass(frozen=True, slots=True)
class ControlToken:
    """A token only special parsing produces (llama.cpp CONTROL/UNKNOWN), and how it eats whitespace."""

    id: int
    lstrip: bool = False
    rstrip: bool = False


def control_tokens(vocab: object, n_vocab: int) -> dict[str, ControlToken]:
    """A llama.cpp vocabulary's tokens that only special parsing produces (CONTROL, UNKNOWN), by text."""
    import llama_cpp

    hidden = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
    found: dict[str, ControlToken] = {}
    for token in range(n_vocab):
        attr = int(llama_cpp.llama_vocab_get_attr(vocab, token))
        if attr & hidden:
            text = llama_cpp.llama_vocab_get_text(vocab, token).decode("utf-8", "replace")
            found[text] = ControlToken(
                token, bool(attr & llama_cpp.LLAMA_TOKEN_ATTR_LSTRIP), bool(attr & llama_cpp.LLAMA_TOKEN_ATTR_RSTRIP)
            )
    return found


def _render(template: str, info: GgufModel, turns: list[dict[str, Any]], tools: list[dict[str, Any]] | None
            ) -> tuple[str, list[str]]:
    from jinja2.exceptions import TemplateError
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(
        template=template, eos_token=info.eos_token, bos_token=info.bos_token, add_generation_prompt=True
    )
    try:
        result = formatter(messages=turns, tools=tools)  # type: ignore[arg-type]
    except (TemplateError, ValueError, TypeError) as exc:  # ValueError: the template's own raise_exception()
        raise InvalidRequest(f"the model's chat template rejected these messages: {exc}", param="messages") from exc
    stops = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
    return result.prompt, [s for s in stops if s]


def _fill(layout: str, marks: re.Pattern[str], contents: Sequence[str]) -> tuple[Span, ...]:
    """The layout (rendered with placeholders) with each placeholder replaced by its untrusted content."""
    spans: list[Span] = []
    at = 0
    for match in marks.finditer(layout):
        spans.append(Span(layout[at:match.start()], True))
        spans.append(Span(contents[int(match[1])], False))
        at = match.end()
    spans.append(Span(layout[at:], True))
    return tuple(s for s in spans if s.text)


def _placeholders(count: int) -> tuple[list[str], re.Pattern[str]]:
    """Unguessable stand-ins for caller text (fresh per prompt, so content cannot spell one)."""
    nonce = secrets.token_hex(8)
    return [f"\ue000{nonce}:{i}\ue001" for i in range(count)], re.compile(f"\ue000{nonce}:(\\d+)\ue001")


def render_chat(info: GgufModel, messages: list[ChatMessage], tools: ToolPlan | None = None) -> Prompt:
    """Render messages (and tools) through the model's Jinja chat template, keeping content apart as plain text.

    The template runs twice: with the real content (the prompt as the template means it) and with a
    placeholder per turn's content (where content goes). When putting the content in the placeholders'
    places reproduces the real prompt, that layout is used. A template that transforms content (`| trim`)
    or branches on it is tried with trimmed content; failing that, the placeholder layout with the content
    as sent is used: the prompt may differ slightly from the template's, but content stays plain text.
    """
    template = info.chat_template or _FALLBACK_TEMPLATE
    turns: list[dict[str, Any]] = (
        [{"role": m.role, "content": m.content} for m in messages] if tools is None else tools.messages(messages)
    )
    template_tools = tools.template_tools() if tools else None
    contents: list[str] = [c if isinstance(c := turn.get("content"), str) else "" for turn in turns]
    real, stops = _render(template, info, turns, template_tools)
    marks, pattern = _placeholders(len(turns))
    marked = [
        {**turn, "content": mark if content else ""} if isinstance(turn.get("content"), str) else turn
        for turn, mark, content in zip(turns, marks, contents, strict=True)
    ]
    layout, _ = _render(template, info, marked, template_tools)
    stops = stops + (tools.stops() if tools else [])
    for variant in (contents, [c.strip(_WHITESPACE) for c in contents]):
        spans = _fill(layout, pattern, variant)
        if "".join(s.text for s in spans) == real:
            return Prompt(spans, stops)
    log.debug("model %s: its chat template transforms message content; content is placed as sent", info.id)
    return Prompt(_fill(layout, pattern, contents), stops)


def _fim(info: GgufModel, prefix: str, suffix: str) -> Prompt:
    from garrison.engines.fim import fim_prompt

    marks, pattern = _placeholders(2)
    return Prompt(_fill(fim_prompt(info, marks[0], marks[1]), pattern, [prefix, suffix]))


def build_prompt(
    info: GgufModel, request: GenerationRequest, tools: ToolPlan | None = None, *, trust_raw: bool = False
) -> Prompt:
    """The spans to tokenize for a request, plus stop strings the template implies.

    A completion prompt is caller text: plain, unless the operator lets raw prompts spell control tokens
    (`trust_raw`, the `engine.raw_prompt_control_tokens` setting). FIM tokens come from the layout.
    """
    if request.messages is not None:
        return render_chat(info, request.messages, tools)
    prompt = request.prompt or ""
    if request.suffix is not None:
        return _fim(info, prompt, request.suffix)
    return Prompt((Span(prompt, trust_raw),) if prompt else ())


def _split_controls(spans: Sequence[Span], controls: Mapping[str, ControlToken]) -> list[str | ControlToken]:
    """Trusted text split at control-token text, longest token first (as llama.cpp's own partition does)."""
    trusted = "".join(s.text for s in spans if s.trusted)
    found = sorted((t for t in controls if t and t in trusted), key=len, reverse=True)
    items: list[str | ControlToken | Span] = list(spans)
    for text in found:
        token = controls[text]
        split: list[str | ControlToken | Span] = []
        for item in items:
            if isinstance(item, Span) and item.trusted and text in item.text:
                parts = item.text.split(text)
                for i, part in enumerate(parts):
                    if i:
                        split.append(token)
                    if part:
                        split.append(Span(part, True))
            else:
                split.append(item)
        items = split
    return [item.text if isinstance(item, Span) else item for item in items]


def tokenize_prompt(
    prompt: Prompt,
    controls: Mapping[str, ControlToken],
    plain: Callable[[str], list[int]],
    bos: int | None = None,
) -> list[int]:
    """Token ids of a prompt: control tokens only where trusted spans spell them, all else plain text.

    `plain` tokenizes text with special parsing off; `bos` is prepended when given. Between control tokens
    the text of adjacent spans is tokenized in one piece, so a prompt without forged control text gets
    exactly the tokens one special-parsing call over the whole text would give.
    """
    tokens: list[int] = [] if bos is None else [bos]
    pending: list[str] = []
    strip_next = False

    def flush() -> None:
        text = "".join(pending)
        pending.clear()
        if text:
            tokens.extend(plain(text))

    for item in _split_controls(prompt.spans, controls):
        if isinstance(item, ControlToken):
            if item.lstrip and pending:
                pending[:] = ["".join(pending).rstrip(_WHITESPACE)]
            flush()
            tokens.append(item.id)
            strip_next = item.rstrip
            continue
        if strip_next:
            item = item.lstrip(_WHITESPACE)
            strip_next = not item
        pending.append(item)
    flush()
    return tokens
