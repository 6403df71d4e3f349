"""POST /v1/responses through the openai SDK against the real server: text, items, tools, streaming, store."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

MODEL = "smollm2-135m-instruct"
pytestmark = pytest.mark.model

ADD = {"type": "function", "name": "add", "description": "Add two integers",
       "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                      "required": ["a", "b"]}}


def test_text_input_with_instructions(openai_client) -> None:
    reply = openai_client.responses.create(model=MODEL, input="Say hello.", instructions="Answer in English.",
                                           temperature=0, max_output_tokens=16)
    assert reply.object == "response" and reply.id.startswith("resp_")
    assert reply.status in ("completed", "incomplete") and reply.output_text
    assert reply.usage is not None and reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0
    assert reply.store is False


def test_streamed_events_follow_the_responses_types(openai_client) -> None:
    stream = openai_client.responses.create(model=MODEL, input=[{"role": "user", "content": "Say hello."}],
                                            temperature=0, max_output_tokens=16, stream=True)
    events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert "response.output_item.added" in kinds and "response.output_text.done" in kinds
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text and events[-1].response.output[0].content[0].text == text
    assert [e.sequence_number for e in events] == list(range(len(events)))


@pytest.mark.parametrize("stream", [False, True])
def test_function_tools_and_the_call_output_loop(openai_client, stream: bool) -> None:
    options = {"model": MODEL, "input": "What is 2 + 3?", "tools": [ADD],
               "tool_choice": {"type": "function", "name": "add"}, "temperature": 0, "max_output_tokens": 64}
    if stream:
        events = list(openai_client.responses.create(**options, stream=True))
        assert "response.function_call_arguments.done" in [e.type for e in events]
        output = events[-1].response.output
    else:
        output = openai_client.responses.create(**options).output
    calls = [item for item in output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "add" and calls[0].call_id.startswith("call_")
    args = json.loads(calls[0].arguments)
    jsonschema.validate(args, ADD["parameters"])
    follow = openai_client.responses.create(
        model=MODEL, tools=[ADD], temperature=0, max_output_tokens=24, tool_choice="none",
        input=[{"role": "user", "content": "What is 2 + 3?"}, calls[0].model_dump(exclude_none=True),
               {"type": "function_call_output", "call_id": calls[0].call_id, "output": str(args["a"] + args["b"])}])
    assert follow.output_text and not [i for i in follow.output if i.type == "function_call"]


def test_previous_response_id_only_when_stored_and_only_for_that_key(openai_client, live_server) -> None:
    first = openai_client.responses.create(model=MODEL, input="My name is Ada.", store=True, temperature=0,
                                           max_output_tokens=8)
    second = openai_client.responses.create(model=MODEL, input="What is my name?", temperature=0,
                                            previous_response_id=first.id, max_output_tokens=8)
    assert second.previous_response_id == first.id and second.usage.input_tokens > first.usage.input_tokens
    unstored = openai_client.responses.create(model=MODEL, input="x", max_output_tokens=4)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.create(model=MODEL, input="y", previous_response_id=unstored.id, max_output_tokens=4)
    other = _other_key_client(live_server)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model=MODEL, input="y", previous_response_id=first.id, max_output_tokens=4)


def _other_key_client(live_server):  # type: ignore[no-untyped-def]
    import httpx

    created = httpx.post(f"{live_server.url}/admin/keys", headers=live_server.headers, timeout=30,
                         json={"name": "responses-other", "scopes": ["chat"], "models": ["*"]})
    assert created.status_code in (200, 201), created.text
    secret = created.json().get("secret") or created.json().get("key")
    return openai.OpenAI(base_url=live_server.openai_base, api_key=secret, max_retries=0, timeout=120)
