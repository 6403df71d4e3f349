"""One request's tool plan: what the prompt shows, which grammar constrains calls, how the reply is parsed.

Templates that lay out tools themselves (Qwen, Hermes, Llama 3.1+, Mistral) get `tools=` and the history in
Hugging Face's message shape. Templates without tool support (SmolLM2) get garrison's generic format: the
tools as JSON schemas in the system message, calls as `<tool_call>{"name", "arguments"}</tool_call>`, and
tool results as a user turn of `<tool_response>` blocks.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from typing import Any

from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from garrison.domain import ChatMessage, GenerationRequest, ToolCall, ToolChoice, ToolSpec
from garrison.engines.gguf import GgufModel
from garrison.engines.tools.families import GENERIC, ToolFormat, template_renders_tools, tool_format
from garrison.engines.tools.parse import ToolCallParser
from garrison.errors import InvalidRequest

# The most calls one reply may hold under a grammar (and never more than the tools offered).
MAX_PARALLEL_CALLS = 8
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def validate_tools(request: GenerationRequest) -> None:
    """400 for tool definitions or a tool_choice garrison cannot honour, before anything is generated."""
    seen: set[str] = set()
    for i, tool in enumerate(request.tools):
        if not _TOOL_NAME.match(tool.name):
            raise InvalidRequest(f"tools[{i}].function.name must be 1-64 letters, digits, '_' or '-': "
                                 f"{tool.name!r}", param=f"tools.{i}.function.name")
        if tool.name in seen:
            raise InvalidRequest(f"tools[{i}]: function '{tool.name}' is defined twice", param=f"tools.{i}")
        seen.add(tool.name)
        if not isinstance(tool.parameters, dict):
            raise InvalidRequest(f"tools[{i}].function.parameters must be a JSON schema object",
                                 param=f"tools.{i}.function.parameters")
        try:
            validator_for(tool.parameters).check_schema(tool.parameters)
        except SchemaError as exc:
            raise InvalidRequest(f"tools[{i}].function.parameters is not a valid JSON schema: {exc.message}",
                                 param=f"tools.{i}.function.parameters") from exc
    choice = request.tool_choice
    if choice.mode == "required" and not request.tools:
        raise InvalidRequest("tool_choice requires a tool call but no tools were given", param="tool_choice")
    if choice.name is not None and choice.name not in seen:
        raise InvalidRequest(f"tool_choice names function '{choice.name}', which is not in tools",
                             param="tool_choice")


@dataclass(frozen=True, slots=True)
class ToolGrammar:
    """GBNF for calls; with `triggers` it is lazy: free text until a trigger pattern matches the output."""

    text: str
    triggers: tuple[str, ...] = ()


@dataclass(slots=True)
class ToolPlan:
    format: ToolFormat
    native: bool  # the chat template renders tools and tool turns itself
    tools: list[ToolSpec]
    choice: ToolChoice
    parallel: bool

    @property
    def active(self) -> bool:
        """Whether the model may call tools in this reply."""
        return bool(self.tools) and self.choice.mode != "none"

    @property
    def offered(self) -> list[ToolSpec]:
        """The tools a call may name: the one named by tool_choice, else all."""
        if self.choice.name is not None:
            return [t for t in self.tools if t.name == self.choice.name]
        return self.tools

    def template_tools(self) -> list[dict[str, Any]] | None:
        """`tools` for a chat template that renders them (OpenAI's shape, as HF templates expect)."""
        if not (self.native and self.active):
            return None
        return [{"type": "function", "function": _schema(t)} for t in self.offered]

    def messages(self, messages: list[ChatMessage]) -> list[dict[str, Any]]:
        """The history as the template's `messages`."""
        if self.native:
            return [_native_message(m, _call_names(messages)) for m in messages]
        return _generic_messages(messages, self)

    def stops(self) -> list[str]:
        """With tool_choice none, a reply that starts a call ends there instead."""
        if self.tools and self.choice.mode == "none" and self.format.open:
            return [self.format.open]
        return []

    def parser(self) -> ToolCallParser | None:
        return ToolCallParser(self.format, self.offered, parallel=self.parallel) if self.active else None

    def grammar(self) -> ToolGrammar | None:
        """`required`/named: every token constrained to calls; `auto`: lazy, from the first call marker on."""
        if not self.active:
            return None
        fmt = self.format
        rules = _call_rules(self.offered, fmt.args_key)
        # A weak model repeats calls until max_tokens; more calls than offered tools are not parallel work.
        many = min(MAX_PARALLEL_CALLS, len(self.offered)) - 1 if self.parallel else 0
        if fmt.tagged:
            block = f'"{fmt.open}\\n" call "\\n{fmt.close}"'
            root = f"root ::= {block}" + (f' ("\\n" {block}){{0,{many}}}' if many else "")
            pattern = re.escape(fmt.open or "")
            triggers = (f"[\\s\\S]*?({pattern})[\\s\\S]*",)
        elif fmt.array:
            body = '"[" call' + (f' ("," " "? call){{0,{many}}}' if many else "") + ' "]"'
            root = f'root ::= ("{_gbnf_literal(fmt.open or "")}" " "?)? {body}'
            triggers = (f"\\s*({re.escape(fmt.open or '')}|\\[)[\\s\\S]*",)
        else:
            prefixes = " | ".join(f'"{_gbnf_literal(p)}"' for p in fmt.prefix_tokens)
            root = f"root ::= ({prefixes})? call" if prefixes else "root ::= call"
            starts = [re.escape(p) for p in fmt.prefix_tokens] + ["\\{"]
            triggers = (f"\\s*({'|'.join(starts)})[\\s\\S]*",)
        lazy = self.choice.mode == "auto"
        return ToolGrammar(text=f"{root}\n{rules}", triggers=triggers if lazy else ())


def plan_tools(info: GgufModel, request: GenerationRequest) -> ToolPlan | None:
    """The plan for a chat request with tools or tool turns in its history; None for a plain chat."""
    messages = request.messages or []
    if not request.tools and not any(m.tool_calls or m.role == "tool" for m in messages):
        return None
    validate_tools(request)
    native = template_renders_tools(info)
    return ToolPlan(
        format=tool_format(info) if native else GENERIC,
        native=native,
        tools=list(request.tools),
        choice=request.tool_choice,
        parallel=request.parallel_tool_calls,
    )


# -- grammar --------------------------------------------------------------------------------------


def _gbnf_literal(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _call_rules(tools: list[ToolSpec], args_key: str) -> str:
    """GBNF rules with `call` matching `{"name": <one tool>, <args_key>: <its arguments>}`."""
    from llama_cpp.llama_grammar import SchemaConverter

    converter = SchemaConverter(prop_order={"name": 0, args_key: 1}, allow_fetch=False, dotall=False,
                                raw_pattern=False)
    alternatives = []
    for i, tool in enumerate(tools):
        try:
            parameters = converter.resolve_refs(copy.deepcopy(tool.parameters), f"tool-{i}")
        except (AssertionError, ValueError) as exc:
            raise InvalidRequest(f"tools[{i}].function.parameters: {exc}", param=f"tools.{i}") from exc
        alternatives.append({
            "type": "object",
            "properties": {"name": {"const": tool.name}, args_key: parameters},
            "required": ["name", args_key],
            "additionalProperties": False,
        })
    try:
        converter.visit({"anyOf": alternatives}, "call")
    except Exception as exc:  # noqa: BLE001 - the converter raises plain exceptions on schemas it cannot do
        raise InvalidRequest(f"tools: a parameters schema could not be turned into a grammar: {exc}",
                             param="tools") from exc
    return str(converter.format_grammar())


# -- messages -------------------------------------------------------------------------------------


def _schema(tool: ToolSpec) -> dict[str, Any]:
    return {"name": tool.name, "description": tool.description, "parameters": tool.parameters}


def _arguments(call: ToolCall) -> Any:
    """Arguments as an object (templates apply `tojson` to them); text that is not JSON stays text."""
    try:
        return json.loads(call.arguments) if call.arguments else {}
    except ValueError:
        return call.arguments


def _call_names(messages: list[ChatMessage]) -> dict[str, str]:
    """Tool call id -> function name, for tool turns that do not repeat the name."""
    return {c.id: c.name for m in messages for c in m.tool_calls}


def _native_message(message: ChatMessage, names: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": _arguments(c)}}
            for c in message.tool_calls
        ]
    if message.role == "tool":
        out["tool_call_id"] = message.tool_call_id or ""
        out["name"] = message.name or names.get(message.tool_call_id or "", "")
    return out


def generic_instructions(plan: ToolPlan) -> str:
    """The system text that teaches a model without tool support garrison's call format."""
    lines = ["You can call functions. These are available, as JSON schemas:"]
    lines += [json.dumps(_schema(t), ensure_ascii=False) for t in plan.offered]
    lines += [
        "To call a function, reply with exactly:",
        '<tool_call>\n{"name": "<function name>", "arguments": {<arguments as JSON>}}\n</tool_call>',
        "Use one <tool_call> block per call. Function results come back in <tool_response> blocks.",
    ]
    if plan.choice.name is not None:
        lines.append(f"Call the function {plan.choice.name} now.")
    elif plan.choice.mode == "required":
        lines.append("Call one of these functions now.")
    else:
        lines.append("If no function is needed, answer normally.")
    return "\n".join(lines)


def _generic_messages(messages: list[ChatMessage], plan: ToolPlan) -> list[dict[str, Any]]:
    names = _call_names(messages)
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            name = m.name or names.get(m.tool_call_id or "", "")
            block = "<tool_response>\n" + json.dumps({"name": name, "content": m.content}, ensure_ascii=False) + \
                "\n</tool_response>"
            if out and out[-1].get("_tool_results"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "_tool_results": True})
            continue
        content = m.content
        if m.tool_calls:
            blocks = [
                "<tool_call>\n" + json.dumps({"name": c.name, "arguments": _arguments(c)}, ensure_ascii=False)
                + "\n</tool_call>"
                for c in m.tool_calls
            ]
            content = "\n".join([content, *blocks] if content else blocks)
        out.append({"role": m.role, "content": content})
    for item in out:
        item.pop("_tool_results", None)
    if plan.active:
        instructions = generic_instructions(plan)
        if out and out[0]["role"] == "system":
            out[0]["content"] = f"{out[0]['content']}\n\n{instructions}" if out[0]["content"] else instructions
        else:
            out.insert(0, {"role": "system", "content": instructions})
    return out
