"""Agents' features through real clients against the real server: tools (openai SDK, ollama client, LangChain),
n > 1, logprobs and token-id inputs. The 135M model's choices are poor; these tests check structure only."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import jsonschema
import openai
import pytest

MODEL = "smollm2-135m-instruct"
pytestmark = pytest.mark.model

WEATHER_PARAMS = {"type": "object",
                  "properties": {"city": {"type": "string", "maxLength": 40},
                                 "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                  "required": ["city", "unit"], "additionalProperties": False}
ADD_PARAMS = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
              "required": ["a", "b"]}
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                      "parameters": WEATHER_PARAMS}},
    {"type": "function", "function": {"name": "add", "description": "Add two integers", "parameters": ADD_PARAMS}},
]
SCHEMAS = {"get_weather": WEATHER_PARAMS, "add": ADD_PARAMS}
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Paris, in celsius?"}]


def valid(name: str, arguments: str | dict[str, Any]) -> dict[str, Any]:
    args = json.loads(arguments) if isinstance(arguments, str) else dict(arguments)
    jsonschema.validate(args, SCHEMAS[name])
    return args


def streamed_calls(stream: Any) -> tuple[str, dict[int, dict[str, Any]], set[str]]:
    """Accumulate a streamed chat the way OpenAI's docs do: by tool call index."""
    text, calls, finishes = "", {}, set()
    for chunk in stream:
        for choice in chunk.choices:
            delta = choice.delta
            text += delta.content or ""
            for part in delta.tool_calls or []:
                call = calls.setdefault(part.index, {"id": None, "name": None, "arguments": ""})
                call["id"] = call["id"] or part.id
                if part.function is not None:
                    call["name"] = call["name"] or part.function.name
                    call["arguments"] += part.function.arguments or ""
            if choice.finish_reason:
                finishes.add(choice.finish_reason)
    return text, calls, finishes


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "add"}}])
def test_openai_sdk_required_and_named_calls(openai_client, choice: Any) -> None:
    reply = openai_client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice=choice,
                                                  temperature=0, max_tokens=96)
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "tool_calls" and message.tool_calls
    for call in message.tool_calls:
        assert call.type == "function" and call.id.startswith("call_")
        valid(call.function.name, call.function.arguments)
    if isinstance(choice, dict):
        assert [c.function.name for c in message.tool_calls] == ["add"]


def test_openai_sdk_streamed_tool_calls_follow_the_wire_format(openai_client) -> None:
    stream = openai_client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required",
                                                   temperature=0, max_tokens=96, stream=True)
    text, calls, finishes = streamed_calls(stream)
    assert text == "" and finishes == {"tool_calls"}
    assert sorted(calls) == list(range(len(calls))) and calls
    for call in calls.values():
        assert call["id"].startswith("call_")
        valid(call["name"], call["arguments"])


def test_parallel_tool_calls_false_gives_one_call(openai_client) -> None:
    reply = openai_client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required",
                                                  parallel_tool_calls=False, temperature=0, max_tokens=96)
    assert len(reply.choices[0].message.tool_calls or []) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_auto_and_none_never_show_call_json_as_content(openai_client, stream: bool) -> None:
    for choice in ("auto", "none"):
        for seed in range(2):
            options: dict[str, Any] = {"model": MODEL, "messages": ASK, "tools": TOOLS, "tool_choice": choice,
                                       "temperature": 0.9, "seed": seed, "max_tokens": 64}
            if stream:
                text, calls, _ = streamed_calls(openai_client.chat.completions.create(**options, stream=True))
                names = [(c["name"], c["arguments"]) for c in calls.values()]
            else:
                message = openai_client.chat.completions.create(**options).choices[0].message
                text = message.content or ""
                names = [(c.function.name, c.function.arguments) for c in message.tool_calls or []]
            assert "<tool_call>" not in text and '"arguments"' not in text
            for name, arguments in names:
                valid(name, arguments)
            if choice == "none":
                assert names == []


def test_a_two_turn_agent_loop_executes_the_call_and_answers(openai_client) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is 2 + 3? Use the add tool."}]
    first = openai_client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS,
                                                  tool_choice={"type": "function", "function": {"name": "add"}},
                                                  temperature=0, max_tokens=64)
    call = first.choices[0].message.tool_calls[0]
    args = valid(call.function.name, call.function.arguments)
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": str(args["a"] + args["b"])}]
    second = openai_client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, temperature=0,
                                                   max_tokens=48, tool_choice="none")
    assert second.choices[0].message.content and not second.choices[0].message.tool_calls


def test_bad_tools_are_openai_400s(openai_client) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, max_tokens=8,
                                              tool_choice={"type": "function", "function": {"name": "missing"}})
    assert caught.value.body["param"] == "tool_choice"  # type: ignore[index]


def test_n3_chat_and_completions(openai_client) -> None:
    chat = openai_client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Name a fruit."}],
                                                 n=3, seed=11, temperature=1.0, max_tokens=12)
    assert [c.index for c in chat.choices] == [0, 1, 2]
    again = openai_client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Name a fruit."}],
                                                  n=3, seed=11, temperature=1.0, max_tokens=12)
    assert [c.message.content for c in chat.choices] == [c.message.content for c in again.choices]
    stream = openai_client.completions.create(model=MODEL, prompt="Once upon a time", n=3, seed=3, max_tokens=8,
                                              temperature=1.0, stream=True)
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert sorted(texts) == [0, 1, 2] and sorted(finishes) == [0, 1, 2]


@pytest.mark.parametrize("stream", [False, True])
def test_chat_logprobs_sum_sanity(openai_client, stream: bool) -> None:
    options: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}],
                               "logprobs": True, "top_logprobs": 4, "temperature": 0, "max_tokens": 10}
    if stream:
        content = []
        text = ""
        for chunk in openai_client.chat.completions.create(**options, stream=True):
            for choice in chunk.choices:
                text += choice.delta.content or ""
                if choice.logprobs and choice.logprobs.content:
                    content += choice.logprobs.content
    else:
        reply = openai_client.chat.completions.create(**options)
        content, text = reply.choices[0].logprobs.content, reply.choices[0].message.content
    assert content and "".join(t.token for t in content) == text
    for token in content:
        assert token.logprob <= 0 and len(token.top_logprobs) == 4
        assert sum(math.exp(t.logprob) for t in token.top_logprobs) <= 1 + 1e-5
        assert token.top_logprobs[0].logprob == pytest.approx(token.logprob)  # greedy picks the likeliest


def test_completions_logprobs_and_token_id_prompts(openai_client, live_server) -> None:
    ids = live_server.app.state.inference.engine(MODEL).tokenize("The capital of France is", add_bos=True)
    by_text = openai_client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6,
                                               temperature=0, logprobs=2)
    by_ids = openai_client.completions.create(model=MODEL, prompt=ids, max_tokens=6, temperature=0, logprobs=2)
    assert by_ids.choices[0].text == by_text.choices[0].text
    lp = by_ids.choices[0].logprobs
    assert lp is not None and "".join(lp.tokens or []) == by_ids.choices[0].text
    assert all(len(top) <= 2 for top in lp.top_logprobs or [])
    nested = openai_client.completions.create(model=MODEL, prompt=[ids], max_tokens=6, temperature=0)
    assert nested.choices[0].text == by_text.choices[0].text
    with pytest.raises(openai.BadRequestError, match="send the prompt as text"):
        openai_client.completions.create(model=MODEL, prompt=[10**9], max_tokens=4)


def test_embeddings_with_token_ids_say_what_to_send(openai_client) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.embeddings.create(model="all-minilm-l6-v2", input=[[9906, 1917]])
    assert "check_embedding_ctx_length=False" in str(caught.value)
    assert caught.value.body["param"] == "input"  # type: ignore[index]


def test_ollama_client_tools_streamed_and_not(live_server) -> None:
    import ollama

    with ollama.Client(host=live_server.url, headers=live_server.headers) as client:
        _ollama_tools_streamed_and_not(client)


def _ollama_tools_streamed_and_not(client: Any) -> None:
    show = client.show(MODEL)
    assert "tools" in (show.capabilities or [])
    options = {"temperature": 0, "num_predict": 64}
    reply = client.chat(model=MODEL, messages=ASK, tools=TOOLS, options=options)
    for call in reply.message.tool_calls or []:
        valid(call.function.name, dict(call.function.arguments))
    assert "<tool_call>" not in (reply.message.content or "")
    history = [*ASK, {"role": "assistant", "content": "",
                      "tool_calls": [{"function": {"name": "get_weather",
                                                   "arguments": {"city": "Paris", "unit": "celsius"}}}]},
               {"role": "tool", "content": "18 degrees and sunny", "tool_name": "get_weather"}]
    parts = list(client.chat(model=MODEL, messages=history, tools=TOOLS, options=options, stream=True))
    assert parts[-1].done
    text = "".join(p.message.content or "" for p in parts)
    assert "<tool_call>" not in text
    for part in parts:
        for call in part.message.tool_calls or []:
            valid(call.function.name, dict(call.function.arguments))


def test_ollama_raw_tool_calls_wire_shape(live_server) -> None:
    """Force a call through the OpenAI surface's grammar, then replay it to /api/chat in Ollama's shape."""
    body = {"model": MODEL, "messages": ASK, "tools": TOOLS, "stream": False, "options": {"temperature": 0}}
    reply = httpx.post(f"{live_server.url}/api/chat", json=body, headers=live_server.headers, timeout=120)
    assert reply.status_code == 200, reply.text
    message = reply.json()["message"]
    assert message["role"] == "assistant"
    for call in message.get("tool_calls", []):
        assert isinstance(call["function"]["arguments"], dict)
        valid(call["function"]["name"], call["function"]["arguments"])


def _langchain_tools() -> list[Any]:
    from langchain_core.tools import tool

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    return [add]


def _agent_loop(model: Any) -> None:
    """bind_tools, run the call the model makes, send the result back, get an answer."""
    from langchain_core.messages import HumanMessage, ToolMessage

    tools = {t.name: t for t in _langchain_tools()}
    forced = model.bind_tools(list(tools.values()), tool_choice="add")
    messages: list[Any] = [HumanMessage("What is 2 + 3? Use the add tool.")]
    reply = forced.invoke(messages)
    assert reply.tool_calls, reply
    messages.append(reply)
    for call in reply.tool_calls:
        assert call["name"] == "add" and call["id"]
        jsonschema.validate(call["args"], ADD_PARAMS)
        messages.append(ToolMessage(str(tools["add"].invoke(call["args"])), tool_call_id=call["id"]))
    answer = model.bind_tools(list(tools.values()), tool_choice="none").invoke(messages)
    assert answer.content and not answer.tool_calls


def test_langchain_chat_openai_bind_tools_loop(live_server) -> None:
    from langchain_openai import ChatOpenAI

    _agent_loop(ChatOpenAI(model=MODEL, base_url=live_server.openai_base, api_key=live_server.api_key,
                           temperature=0, max_tokens=64, max_retries=0))


def test_langchain_chat_ollama_bind_tools_loop(live_server) -> None:
    from langchain_core.messages import HumanMessage
    from langchain_ollama import ChatOllama

    model = ChatOllama(model=MODEL, base_url=live_server.url, temperature=0, num_predict=64,
                       client_kwargs={"headers": live_server.headers})
    reply = model.bind_tools(_langchain_tools()).invoke([HumanMessage("What is 2 + 3? Use the add tool.")])
    assert "<tool_call>" not in str(reply.content)
    for call in reply.tool_calls:
        assert call["name"] == "add"
        jsonschema.validate(call["args"], ADD_PARAMS)


@pytest.mark.parametrize("prefix", ["openai", "ollama_chat"])
def test_litellm_as_a_client_with_tools(live_server, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # its bundled price map: no download at import
    import litellm

    base = live_server.openai_base if prefix == "openai" else live_server.url
    extra: dict[str, Any] = {"tool_choice": "required"} if prefix == "openai" else {}
    reply = litellm.completion(model=f"{prefix}/{MODEL}", messages=ASK, tools=TOOLS, api_base=base,
                               api_key=live_server.api_key, temperature=0, max_tokens=64,
                               extra_headers=live_server.headers, **extra)
    message = reply.choices[0].message
    assert "<tool_call>" not in (message.content or "")
    if prefix == "openai":
        assert message.tool_calls
    for call in message.tool_calls or []:
        valid(call.function.name, call.function.arguments)
