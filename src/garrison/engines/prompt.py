"""Prompt construction: the model's own chat template, and fill-in-the-middle from its FIM tokens."""

from __future__ import annotations

from typing import Any

from garrison.domain import ChatMessage, GenerationRequest
from garrison.engines.gguf import GgufModel
from garrison.engines.tools.plan import ToolPlan
from garrison.errors import InvalidRequest

# ChatML: used only when a GGUF carries no template at all.
_FALLBACK_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)


def render_chat(info: GgufModel, messages: list[ChatMessage], tools: ToolPlan | None = None) -> tuple[str, list[str]]:
    """Render messages (and tools) through the model's Jinja chat template; returns (prompt, stop strings)."""
    from jinja2.exceptions import TemplateError
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(
        template=info.chat_template or _FALLBACK_TEMPLATE,
        eos_token=info.eos_token,
        bos_token=info.bos_token,
        add_generation_prompt=True,
    )
    turns: list[dict[str, Any]]
    if tools is None:
        turns = [{"role": m.role, "content": m.content} for m in messages]
    else:
        turns = tools.messages(messages)
    try:
        result = formatter(messages=turns, tools=tools.template_tools() if tools else None)  # type: ignore[arg-type]
    except (TemplateError, ValueError, TypeError) as exc:
        raise InvalidRequest(f"the model's chat template rejected these messages: {exc}", param="messages") from exc
    stops = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
    return result.prompt, [s for s in stops if s] + (tools.stops() if tools else [])


def build_prompt(info: GgufModel, request: GenerationRequest, tools: ToolPlan | None = None) -> tuple[str, list[str]]:
    """The exact text to tokenize for a request, plus stop strings the template implies."""
    if request.messages is not None:
        return render_chat(info, request.messages, tools)
    prompt = request.prompt or ""
    if request.suffix is not None:
        from garrison.engines.fim import fim_prompt

        return fim_prompt(info, prompt, request.suffix), []
    return prompt, []
