"""Tool calling without the model: family table, prompt rendering, streamed parsing, grammars, choices."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from garrison.domain import (
    ChatMessage,
    GenerationDone,
    GenerationRequest,
    SamplingParams,
    TokenDelta,
    ToolCall,
    ToolCallEvent,
    ToolChoice,
    ToolSpec,
    Usage,
    collect,
)
from garrison.engines.choices import ChoiceQueue, ChoiceStream, merge
from garrison.engines.gguf import GgufModel
from garrison.engines.logprobs import Record, record
from garrison.engines.prompt import render_chat
from garrison.engines.tools import ToolCallParser, plan_tools, tool_format, validate_tools
from garrison.engines.tools.families import GENERIC, HERMES, LLAMA3, MISTRAL
from garrison.errors import InvalidRequest

SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# A Hermes/Qwen-style template that lays out tools itself (trimmed to what these tests read).
HERMES_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n# Tools\n<tools>{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}"
    "\n</tools>\nReturn calls in <tool_call></tool_call> tags.<|im_end|>\n{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and message.tool_calls %}\n<|im_start|>assistant\n{{ message.content }}"
    "{%- for tool_call in message.tool_calls %}{%- set tool_call = tool_call.function %}\n<tool_call>\n"
    '{"name": "{{ tool_call.name }}", "arguments": {{ tool_call.arguments | tojson }}}\n</tool_call>'
    "{%- endfor %}<|im_end|>"
    "{%- elif message.role == 'tool' %}\n<|im_start|>user\n<tool_response>\n{{ message.content }}\n"
    "</tool_response><|im_end|>"
    "{%- else %}\n<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>{%- endif %}"
    "{%- endfor %}\n{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
)
LLAMA3_TEMPLATE = (
    "{%- if tools is not none %}Respond with a JSON for a function call with its proper arguments.\n"
    'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.'
    "{%- endif %}<|python_tag|>"
)
MISTRAL_TEMPLATE = "{%- if tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{%- endif %}[TOOL_CALLS]"

WEATHER = ToolSpec(
    name="get_weather", description="Current weather in a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"},
                                                 "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                "required": ["city"]},
)
TIME = ToolSpec(name="get_time", parameters={"type": "object", "properties": {"tz": {"type": "string"}},
                                             "required": ["tz"]})


def info(template: str | None, name: str = "some-model") -> GgufModel:
    return GgufModel(id=name, path=Path("/nonexistent.gguf"), size_bytes=0, sha256="", quantization="Q4_0",
                     context_length=2048, chat_template=template, eos_token="<|im_end|>")


def request(*messages: ChatMessage, tools: list[ToolSpec] | None = None, choice: ToolChoice | None = None,
            parallel: bool = True) -> GenerationRequest:
    return GenerationRequest(model="m", messages=list(messages), tools=list(tools or []),
                             tool_choice=choice or ToolChoice(), parallel_tool_calls=parallel)


def streamed(parser: ToolCallParser, text: str) -> list[str | ToolCall]:
    """Feed `text` one character at a time, as the worst-case tokenizer would."""
    out: list[str | ToolCall] = []
    for ch in text:
        out += parser.feed(ch)
    return out + parser.finish()


def texts(pieces: list[str | ToolCall]) -> str:
    return "".join(p for p in pieces if isinstance(p, str))


def calls(pieces: list[str | ToolCall]) -> list[ToolCall]:
    return [p for p in pieces if isinstance(p, ToolCall)]


# -- the family table -----------------------------------------------------------------------------


@pytest.mark.parametrize(("template", "family"), [
    (SMOLLM2_TEMPLATE, "generic"), (None, "generic"), (HERMES_TEMPLATE, "hermes"), (LLAMA3_TEMPLATE, "llama3"),
    (MISTRAL_TEMPLATE, "mistral"),
])
def test_family_comes_from_the_chat_template(template: str | None, family: str) -> None:
    assert tool_format(info(template)).family == family


def test_a_tool_template_without_known_markers_falls_back_to_the_name_then_generic() -> None:
    assert tool_format(info("{% if tools %}{{ tools }}{% endif %}", name="qwen2.5-7b")).family == "hermes"
    assert tool_format(info("{% if tools %}{{ tools }}{% endif %}", name="Meta-Llama-3.1-8B")).family == "llama3"
    assert tool_format(info("{% if tools %}{{ tools }}{% endif %}", name="mystery")).family == "generic"


# -- streamed parsing -----------------------------------------------------------------------------


def test_hermes_text_then_calls_never_leaks_call_json() -> None:
    reply = ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
             '<tool_call>\n{"name": "get_time", "arguments": {"tz": "CET"}}\n</tool_call>')
    parser = ToolCallParser(HERMES, [WEATHER, TIME])
    pieces = streamed(parser, reply)
    assert texts(pieces) == "Let me check.\n"
    assert [(c.name, json.loads(c.arguments)) for c in calls(pieces)] == [
        ("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})]
    assert all(c.id.startswith("call_") and len(c.id) == 29 for c in calls(pieces))


def test_partial_markers_are_held_back_and_released_when_they_are_text() -> None:
    parser = ToolCallParser(HERMES, [WEATHER])
    assert parser.feed("a <tool") == ["a "]
    assert parser.feed("box> b") == ["<toolbox> b"]
    assert parser.finish() == []


def test_parallel_false_keeps_the_first_call_only() -> None:
    reply = ('<tool_call>{"name": "get_time", "arguments": {"tz": "A"}}</tool_call>'
             '<tool_call>{"name": "get_time", "arguments": {"tz": "B"}}</tool_call>')
    pieces = streamed(ToolCallParser(HERMES, [TIME], parallel=False), reply)
    assert [json.loads(c.arguments) for c in calls(pieces)] == [{"tz": "A"}]


@pytest.mark.parametrize("payload", [
    '{"name": "nope", "arguments": {}}',  # unknown tool
    '{"name": "get_weather", "arguments": {"unit": "celsius"}}',  # schema: city is required
    '{"name": "get_weather", "arguments": {"city": "x"',  # cut off
])
def test_marked_calls_that_do_not_validate_are_dropped_not_shown(payload: str) -> None:
    parser = ToolCallParser(HERMES, [WEATHER])
    pieces = streamed(parser, f"<tool_call>{payload}</tool_call>")
    assert pieces == [] and parser.dropped == 1


def test_a_call_missing_its_closing_tag_at_the_end_still_counts() -> None:
    pieces = streamed(ToolCallParser(HERMES, [WEATHER]), '<tool_call>\n{"name": "get_weather", '
                                                          '"arguments": "{\\"city\\": \\"Oslo\\"}"}')
    assert [json.loads(c.arguments) for c in calls(pieces)] == [{"city": "Oslo"}]


def test_llama3_bare_json_call_and_python_tag() -> None:
    for reply in ['{"name": "get_weather", "parameters": {"city": "Rome"}}',
                  '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Rome"}}']:
        pieces = streamed(ToolCallParser(LLAMA3, [WEATHER]), reply)
        assert texts(pieces) == "" and [c.name for c in calls(pieces)] == ["get_weather"]


def test_json_that_is_not_a_call_is_shown_as_text() -> None:
    reply = '{"answer": 42}'
    assert streamed(ToolCallParser(LLAMA3, [WEATHER]), reply) == [reply]
    assert texts(streamed(ToolCallParser(LLAMA3, [WEATHER]), "Plain words.")) == "Plain words."


def test_mistral_tool_calls_array() -> None:
    reply = '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Bern"}}, ' \
            '{"name": "get_time", "arguments": {"tz": "CET"}}]'
    pieces = streamed(ToolCallParser(MISTRAL, [WEATHER, TIME]), reply)
    assert texts(pieces) == "" and [c.name for c in calls(pieces)] == ["get_weather", "get_time"]
    # Without the control token rendered, the array alone is recognised.
    bare = streamed(ToolCallParser(MISTRAL, [WEATHER, TIME]), reply.removeprefix("[TOOL_CALLS] "))
    assert len(calls(bare)) == 2


def test_generic_accepts_tags_and_a_fenced_json_reply() -> None:
    fenced = '```json\n{"name": "get_weather", "arguments": {"city": "Lima"}}\n```'
    assert [c.name for c in calls(streamed(ToolCallParser(GENERIC, [WEATHER]), fenced))] == ["get_weather"]
    tagged = 'ok <tool_call>{"name": "get_weather", "arguments": {"city": "Lima"}}</tool_call>'
    pieces = streamed(ToolCallParser(GENERIC, [WEATHER]), tagged)
    assert texts(pieces) == "ok " and len(calls(pieces)) == 1


# -- validation and rendering ---------------------------------------------------------------------


@pytest.mark.parametrize(("tools", "choice", "param"), [
    ([ToolSpec(name="bad name")], ToolChoice(), "tools.0.function.name"),
    ([WEATHER, WEATHER], ToolChoice(), "tools.1"),
    ([ToolSpec(name="f", parameters={"type": "nonsense"})], ToolChoice(), "tools.0.function.parameters"),
    ([], ToolChoice("required"), "tool_choice"),
    ([WEATHER], ToolChoice("required", "get_time"), "tool_choice"),
])
def test_bad_tools_are_400s_naming_the_field(tools: list[ToolSpec], choice: ToolChoice, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_tools(request(tools=tools, choice=choice))
    assert caught.value.param == param


HISTORY = [
    ChatMessage("user", "Weather in Paris?"),
    ChatMessage("assistant", "", tool_calls=[ToolCall("call_1", "get_weather", '{"city": "Paris"}')]),
    ChatMessage("tool", "18C and sunny", tool_call_id="call_1"),
]


def test_generic_format_teaches_the_tools_and_replays_the_history() -> None:
    req = request(*HISTORY, tools=[WEATHER])
    prompt = render_chat(info(SMOLLM2_TEMPLATE), HISTORY, plan_tools(info(SMOLLM2_TEMPLATE), req)).text
    assert prompt.startswith("<|im_start|>system\nYou can call functions.")
    assert json.dumps({"name": "get_weather", "description": WEATHER.description,
                       "parameters": WEATHER.parameters}) in prompt
    assert ('<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
            "</tool_call><|im_end|>") in prompt
    assert ('<|im_start|>user\n<tool_response>\n{"name": "get_weather", "content": "18C and sunny"}\n'
            "</tool_response><|im_end|>") in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_native_template_gets_tools_and_history_in_hf_shape() -> None:
    req = request(*HISTORY, tools=[WEATHER])
    prompt = render_chat(info(HERMES_TEMPLATE), HISTORY, plan_tools(info(HERMES_TEMPLATE), req)).text
    assert '"name": "get_weather"' in prompt.split("</tools>")[0]
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in prompt
    assert "<tool_response>\n18C and sunny\n</tool_response>" in prompt
    assert "You can call functions" not in prompt  # garrison's own format only where the template has none


def test_tool_choice_none_hides_the_tools_and_stops_at_a_call_marker() -> None:
    req = request(ChatMessage("user", "hi"), tools=[WEATHER], choice=ToolChoice("none"))
    plan = plan_tools(info(SMOLLM2_TEMPLATE), req)
    assert plan is not None and plan.parser() is None and plan.grammar() is None
    rendered = render_chat(info(SMOLLM2_TEMPLATE), req.messages or [], plan)
    prompt, stops = rendered.text, rendered.stops
    assert "get_weather" not in prompt and "<tool_call>" in stops


def test_plain_chats_have_no_tool_plan() -> None:
    assert plan_tools(info(SMOLLM2_TEMPLATE), request(ChatMessage("user", "hi"))) is None


@pytest.mark.parametrize(("template", "choice", "parallel", "start", "lazy"), [
    (SMOLLM2_TEMPLATE, ToolChoice("required"), True, 'root ::= "<tool_call>\\n" call "\\n</tool_call>" ("\\n"', False),
    (SMOLLM2_TEMPLATE, ToolChoice("auto"), False, 'root ::= "<tool_call>\\n" call "\\n</tool_call>"\n', True),
    (LLAMA3_TEMPLATE, ToolChoice("required", "get_time"), True, 'root ::= ("<|python_tag|>")? call\n', False),
    (MISTRAL_TEMPLATE, ToolChoice("auto"), True, 'root ::= ("[TOOL_CALLS]" " "?)? "[" call', True),
])
def test_grammar_shape_per_family(template: str, choice: ToolChoice, parallel: bool, start: str,
                                  lazy: bool) -> None:
    plan = plan_tools(info(template), request(ChatMessage("user", "x"), tools=[WEATHER, TIME], choice=choice,
                                              parallel=parallel))
    assert plan is not None
    grammar = plan.grammar()
    assert grammar is not None and grammar.text.startswith(start)
    assert bool(grammar.triggers) == lazy
    assert "call ::=" in grammar.text
    assert ('"\\"get_time\\""' in grammar.text) and (('"\\"get_weather\\""' in grammar.text) != bool(choice.name))


# -- logprobs and choices -------------------------------------------------------------------------


def test_logprobs_are_a_log_softmax_with_sorted_alternatives() -> None:
    logits = np.array([1.0, 3.0, 2.0, -1.0], dtype=np.float32)
    got = record(logits, 2, 3)
    expected = logits - math.log(float(np.exp(logits.astype(np.float64)).sum()))
    assert got.logprob == pytest.approx(expected[2])
    assert [t for t, _ in got.top] == [1, 2, 0]
    assert [lp for _, lp in got.top] == pytest.approx([expected[1], expected[2], expected[0]])


class _Sampler:
    def __init__(self, records: list[Record]) -> None:
        self.records = records


def test_choices_merge_into_one_done_with_calls_and_logprobs() -> None:
    tokens = {1: b"<tool_call>", 2: b"x"}

    async def run() -> list[Any]:
        shared: asyncio.Queue[Any] = asyncio.Queue()
        streams = [
            ChoiceStream(0, _Sampler([Record(2, -0.5, [(2, -0.5)])]), None, tokens.__getitem__, True),  # type: ignore[arg-type]
            ChoiceStream(1, _Sampler([]), ToolCallParser(GENERIC, [TIME]), tokens.__getitem__, False),  # type: ignore[arg-type]
        ]
        q0, q1 = ChoiceQueue(shared, 0), ChoiceQueue(shared, 1)
        q1.put_nowait(TokenDelta('<tool_call>{"name": "get_time", "arguments": {"tz": "UTC"}}</tool_call>', 9))
        q0.put_nowait(TokenDelta("x", 1))
        q1.put_nowait(GenerationDone("stop", Usage(prompt_tokens=10, completion_tokens=9, cached_tokens=4)))
        q0.put_nowait(GenerationDone("length", Usage(prompt_tokens=10, completion_tokens=1, cached_tokens=4)))
        return [event async for event in merge(shared, streams)]

    events = asyncio.run(run())
    done = events[-1]
    assert isinstance(done, GenerationDone)
    assert done.choice_reasons == ["length", "tool_calls"] and done.finish_reason == "length"
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.cached_tokens) == (10, 10, 4)
    call = next(e for e in events if isinstance(e, ToolCallEvent))
    assert (call.choice, call.index, call.call.name) == (1, 0, "get_time")
    req = GenerationRequest(model="m", messages=[], sampling=SamplingParams(n=2, logprobs=True))
    result = collect(req, events)
    assert [c.text for c in result.choices] == ["x", ""]
    assert result.choices[1].tool_calls == [call.call] and result.choices[1].finish_reason == "tool_calls"
    assert [(lp.token, lp.logprob, lp.bytes) for lp in result.choices[0].logprobs or []] == [("x", -0.5, [120])]
