"""How each model family writes a tool call, found from its chat template or its name (as fim.py does)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from garrison.engines.fim import name_words
from garrison.engines.gguf import GgufModel


@dataclass(frozen=True, slots=True)
class ToolFormat:
    """One family's call syntax.

    A call is a JSON object `{"name": ..., <args_key>: {...}}`. It is either wrapped in `open` ... `close`
    markers (Hermes/Qwen `<tool_call>`), introduced by `open` as a JSON array of calls (Mistral
    `[TOOL_CALLS]`), or, with `json_start`, the whole reply is the JSON object (Llama 3) or array.
    """

    family: str
    open: str | None
    close: str | None
    args_key: str = "arguments"
    array: bool = False  # after `open` (or at the start), the calls are one JSON array
    json_start: bool = False  # a reply that starts with a JSON object/array may be a call without markers
    prefix_tokens: tuple[str, ...] = ()  # control tokens that may precede a bare call (Llama's <|python_tag|>)
    template_markers: tuple[str, ...] = ()  # any one in the chat template selects the family
    name_keywords: tuple[tuple[str, ...], ...] = ()  # any one group, all words in the model's name

    @property
    def tagged(self) -> bool:
        return self.open is not None and self.close is not None


HERMES = ToolFormat(
    family="hermes",
    open="<tool_call>",
    close="</tool_call>",
    template_markers=("<tool_call>",),
    name_keywords=(("qwen",), ("hermes",), ("smollm3",)),
)
LLAMA3 = ToolFormat(
    family="llama3",
    open=None,
    close=None,
    args_key="parameters",
    json_start=True,
    prefix_tokens=("<|python_tag|>",),
    template_markers=("<|python_tag|>", '"parameters": dictionary'),
    name_keywords=(("llama", "3"), ("llama3",)),
)
MISTRAL = ToolFormat(
    family="mistral",
    open="[TOOL_CALLS]",
    close=None,
    array=True,
    json_start=True,
    template_markers=("[TOOL_CALLS]", "[AVAILABLE_TOOLS]"),
    name_keywords=(("mistral",), ("mixtral",), ("ministral",)),
)
# garrison's own format, taught through the system prompt when the chat template has no tool support.
GENERIC = ToolFormat(family="generic", open="<tool_call>", close="</tool_call>", json_start=True)

FAMILIES: tuple[ToolFormat, ...] = (HERMES, LLAMA3, MISTRAL)


def template_renders_tools(info: GgufModel) -> bool:
    """Whether the model's own chat template lays out `tools` (HF templates read a `tools` variable)."""
    return re.search(r"\btools\b", info.chat_template or "") is not None


def tool_format(info: GgufModel) -> ToolFormat:
    """The family's call syntax when the template renders tools (by its markers, else by name); else generic."""
    if not template_renders_tools(info):
        return GENERIC
    template = info.chat_template or ""
    for family in FAMILIES:
        if any(marker in template for marker in family.template_markers):
            return family
    words = name_words(info)
    for family in FAMILIES:
        if any(all(k in words for k in group) for group in family.name_keywords):
            return family
    return GENERIC
