"""Streamed replies split into text and tool calls, so tool JSON never reaches a client as content."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from jsonschema.validators import validator_for

from garrison.domain import ToolCall, ToolSpec
from garrison.engines.tools.families import ToolFormat

Piece = str | ToolCall
_FENCE = re.compile(r"^```[a-zA-Z]*\s*(.*?)\s*```$", re.DOTALL)


def new_call_id() -> str:
    """An id in OpenAI's shape (`call_` + 24 characters)."""
    return f"call_{uuid.uuid4().hex[:24]}"


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest tail of `text` that is a proper prefix of `marker`."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:size]):
            return size
    return 0


class ToolCallParser:
    """Feed a reply's text as it streams; get back text safe to show and complete, validated calls.

    Text that may be the start of a call (a partial marker, or a reply that opens with JSON in families
    that write bare calls) is held back until it is known. A call whose JSON does not parse, names an
    unknown tool or fails the tool's schema is dropped when it was marked as a call, and shown as text
    when it was only a JSON-looking reply.
    """

    def __init__(self, fmt: ToolFormat, tools: list[ToolSpec], *, parallel: bool = True) -> None:
        self._fmt = fmt
        self._tools = {tool.name: tool for tool in tools}
        self._validators: dict[str, Any] = {}
        self._parallel = parallel
        self._state = "start" if fmt.json_start else "text"
        self._buf = ""
        self.calls: list[ToolCall] = []
        self.dropped = 0  # marked calls that did not parse or validate

    def feed(self, text: str) -> list[Piece]:
        self._buf += text
        out: list[Piece] = []
        while self._step(out):
            pass
        return out

    def finish(self) -> list[Piece]:
        """The reply ended: settle whatever is held back."""
        out: list[Piece] = []
        buf, self._buf = self._buf, ""
        if self._state in ("start", "text"):
            self._text(out, buf)
        elif self._state == "call" or self._state == "array":
            self._add_calls(out, self._parse(buf.strip()), marked=True)
        elif self._state == "json":
            stripped = self._strip_prefix(buf.strip())
            fenced = _FENCE.match(stripped)
            calls = self._parse(fenced.group(1) if fenced else stripped)
            if calls is None:
                self._text(out, buf)
            else:
                self._add_calls(out, calls, marked=False)
        self._state = "done"
        return out

    # -- states -----------------------------------------------------------------------------------

    def _step(self, out: list[Piece]) -> bool:
        """Advance one state transition; False when more text is needed."""
        fmt, buf = self._fmt, self._buf
        if self._state == "start":
            head = self._strip_prefix(buf.lstrip())
            if not head or self._maybe_prefix(head):
                return False
            if not (fmt.open and head.startswith(fmt.open)) and (head[0] in "{[" or head.startswith("```")):
                self._state = "json"
                return False
            self._state = "text"
            return True
        if self._state == "text":
            if fmt.open is None:
                self._buf = ""
                self._text(out, buf)
                return False
            at = buf.find(fmt.open)
            if at < 0:
                keep = _partial_suffix(buf, fmt.open)
                self._buf = buf[len(buf) - keep:]
                self._text(out, buf[: len(buf) - keep])
                return False
            self._text(out, buf[:at])
            self._buf = buf[at + len(fmt.open):]
            self._state = "array" if fmt.array else "call"
            return True
        if self._state == "call":
            assert fmt.close is not None
            end = buf.find(fmt.close)
            if end < 0:
                return False
            self._add_calls(out, self._parse(buf[:end].strip()), marked=True)
            self._buf = buf[end + len(fmt.close):]
            self._state = "between"
            return True
        if self._state == "between":
            head = buf.lstrip()
            if not head or (fmt.open is not None and fmt.open.startswith(head)):
                return False
            self._buf = head
            self._state = "text"
            return True
        return False  # "json", "array": everything is held until the end

    def _maybe_prefix(self, head: str) -> bool:
        """Whether `head` could still grow into a marker or prefix token (so the state is undecided)."""
        markers = [m for m in (self._fmt.open, *self._fmt.prefix_tokens, "```") if m]
        return any(len(head) < len(m) and m.startswith(head) for m in markers)

    def _strip_prefix(self, text: str) -> str:
        for token in self._fmt.prefix_tokens:
            if text.startswith(token):
                return text[len(token):].lstrip()
        return text

    def _text(self, out: list[Piece], text: str) -> None:
        if text and not (self.calls and not text.strip()):
            out.append(text)

    # -- calls ------------------------------------------------------------------------------------

    def _add_calls(self, out: list[Piece], calls: list[ToolCall] | None, *, marked: bool) -> None:
        if calls is None:
            self.dropped += int(marked)
            return
        for call in calls:
            if self.calls and not self._parallel:
                break
            self.calls.append(call)
            out.append(call)

    def _parse(self, payload: str) -> list[ToolCall] | None:
        """The calls in one JSON payload (an object or an array of them), or None if any is invalid."""
        try:
            value = json.loads(payload)
        except ValueError:
            return None
        items = value if isinstance(value, list) else [value]
        calls = []
        for item in items:
            call = self._call(item)
            if call is None:
                return None
            calls.append(call)
        return calls or None

    def _call(self, item: Any) -> ToolCall | None:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return None
        tool = self._tools.get(item["name"])
        args: Any = next((item[k] for k in (self._fmt.args_key, "arguments", "parameters") if k in item), {})
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                return None
        if tool is None or not isinstance(args, dict) or not self._valid(tool, args):
            return None
        return ToolCall(id=new_call_id(), name=tool.name, arguments=json.dumps(args, ensure_ascii=False))

    def _valid(self, tool: ToolSpec, args: dict[str, Any]) -> bool:
        validator = self._validators.get(tool.name)
        if validator is None:
            validator = self._validators[tool.name] = validator_for(tool.parameters)(tool.parameters)
        return bool(validator.is_valid(args))
