"""The OpenAI surface end to end: real model, real server on loopback, the official openai SDK."""

from __future__ import annotations

import base64
import json
import re
import threading
import time

import httpx
import jsonschema
import numpy as np
import openai
import pytest

MODEL = "smollm2-135m-instruct"
EMBED_MODEL = "all-minilm-l6-v2"

pytestmark = pytest.mark.model

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def test_capital_of_france_names_paris(openai_client) -> None:
    reply = openai_client.chat.completions.create(
        model=MODEL, messages=[SYSTEM, {"role": "user", "content": "What is the capital of France?"}],
        temperature=0, max_tokens=30,
    )
    assert "Paris" in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streaming_chat_is_well_formed_and_matches_non_streaming(openai_client) -> None:
    messages = [SYSTEM, {"role": "user", "content": "Name three colours."}]
    whole = openai_client.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=24)
    chunks = list(openai_client.chat.completions.create(
        model=MODEL, messages=messages, temperature=0, max_tokens=24, stream=True,
        stream_options={"include_usage": True},
    ))
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1


def test_raw_stream_ends_with_done(live_server) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "stream": True}
    with httpx.stream("POST", f"{live_server.openai_base}/chat/completions", json=body,
                      headers=live_server.headers, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    for event in events[:-1]:
        assert json.loads(event[len("data: "):])["object"] == "chat.completion.chunk"


def test_json_schema_output_parses_and_validates(openai_client) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"},
                       "landmarks": {"type": "array", "items": {"type": "string"}, "maxItems": 3}},
        "required": ["city", "population", "landmarks"],
        "additionalProperties": False,
    }
    reply = openai_client.chat.completions.create(
        model=MODEL, temperature=0, max_tokens=200,
        messages=[SYSTEM, {"role": "user", "content": "Describe Paris as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
    )
    assert reply.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)


def test_json_object_output_parses(openai_client) -> None:
    reply = openai_client.chat.completions.create(
        model=MODEL, temperature=0, max_tokens=100, response_format={"type": "json_object"},
        messages=[SYSTEM, {"role": "user", "content": "Return a JSON object with keys name and age for a person."}],
    )
    assert reply.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(reply.choices[0].message.content), dict)


def test_same_seed_same_output(openai_client) -> None:
    def sample(seed: int) -> str:
        reply = openai_client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Write a short poem about the sea."}],
            temperature=1.0, seed=seed, max_tokens=24,
        )
        return reply.choices[0].message.content

    first = sample(42)
    assert sample(42) == first
    assert len({first, sample(7), sample(8)}) > 1


def test_stop_sequence_ends_before_the_stop_text(openai_client) -> None:
    free = openai_client.completions.create(model=MODEL, prompt="1, 2, 3, 4, 5, 6, 7,", temperature=0, max_tokens=12)
    assert " 10" in free.choices[0].text
    stopped = openai_client.completions.create(
        model=MODEL, prompt="1, 2, 3, 4, 5, 6, 7,", temperature=0, max_tokens=12, stop=[" 10", "never"]
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].text == free.choices[0].text.split(" 10")[0]


def test_stop_sequence_in_a_stream_is_never_sent(openai_client) -> None:
    stream = openai_client.completions.create(
        model=MODEL, prompt="1, 2, 3, 4, 5, 6, 7,", temperature=0, max_tokens=12, stop=" 10", stream=True
    )
    text = "".join(c.choices[0].text for c in stream if c.choices)
    assert "10" not in text and "9" in text


def test_max_tokens_and_max_completion_tokens_cut_with_length(openai_client) -> None:
    for limit in ({"max_tokens": 5}, {"max_completion_tokens": 5}):
        reply = openai_client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Tell me a long story."}], temperature=0,
            extra_body={"ignore_eos": True}, **limit,
        )
        assert reply.choices[0].finish_reason == "length"
        assert reply.usage.completion_tokens == 5


def test_embeddings_paraphrase_is_closer_than_unrelated(openai_client) -> None:
    texts = ["A cat is sitting on the mat.", "A kitten rests on the rug.", "Interest rates rose sharply today."]
    result = openai_client.embeddings.create(model=EMBED_MODEL, input=texts)
    vectors = np.array([d.embedding for d in result.data])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    assert result.usage.prompt_tokens > 0


def test_embeddings_base64_matches_float(live_server) -> None:
    def fetch(encoding: str) -> dict:
        response = httpx.post(f"{live_server.openai_base}/embeddings", headers=live_server.headers, timeout=30,
                              json={"model": EMBED_MODEL, "input": "hello world", "encoding_format": encoding})
        assert response.status_code == 200
        return response.json()

    floats = np.array(fetch("float")["data"][0]["embedding"], dtype=np.float32)
    decoded = np.frombuffer(base64.b64decode(fetch("base64")["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(floats, decoded, atol=1e-6)


def test_models_lists_generation_and_embedding_models(openai_client) -> None:
    ids = {m.id for m in openai_client.models.list().data}
    assert {MODEL, EMBED_MODEL} <= ids
    assert openai_client.models.retrieve(MODEL).id == MODEL


def test_health_is_public_and_lists_models(live_server) -> None:
    response = httpx.get(f"{live_server.url}/health", timeout=10)
    assert response.status_code == 200
    assert MODEL in {m["id"] for m in response.json()["models"]}


@pytest.mark.parametrize("route, body", [
    ("chat/completions", {"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}),
    ("completions", {"model": "no-such-model", "prompt": "x"}),
    ("embeddings", {"model": "no-such-model", "input": "x"}),
])
def test_unknown_model_is_404_naming_it(live_server, route: str, body: dict) -> None:
    response = httpx.post(f"{live_server.openai_base}/{route}", json=body, headers=live_server.headers, timeout=30)
    assert response.status_code == 404
    error = response.json()["error"]
    assert "no-such-model" in error["message"] and set(error) == {"message", "type", "param", "code"}


def _post(live_server, content: bytes | str, route: str = "chat/completions") -> httpx.Response:
    headers = {**live_server.headers, "content-type": "application/json"}
    return httpx.post(f"{live_server.openai_base}/{route}", content=content, headers=headers, timeout=60)


@pytest.mark.parametrize("body, param", [
    (b"{not json", None),
    (json.dumps({"model": MODEL, "messages": "hello"}), "messages"),
    (json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
     "temperature"),
    (json.dumps({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}), "messages.0.role"),
    (json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": 100}), "n"),
    (json.dumps({"model": MODEL, "messages": []}), "messages"),
])
def test_bad_bodies_are_400_in_openai_shape(live_server, body, param) -> None:
    response = _post(live_server, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


def test_body_over_limit_is_413(live_server) -> None:
    big = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x" * (300 * 1024)}]})
    response = _post(live_server, big)
    assert response.status_code == 413
    assert "limit" in response.json()["error"]["message"]


def test_prompt_longer_than_context_is_400_with_both_numbers(live_server) -> None:
    long_prompt = "word " * 3000
    response = _post(live_server, json.dumps({"model": MODEL, "messages": [{"role": "user", "content": long_prompt}]}))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded"
    match = re.search(r"maximum context length is (\d+) tokens, but the prompt is (\d+) tokens", error["message"])
    assert match and int(match.group(1)) == 2048 and int(match.group(2)) > 2048


def test_fim_suffix_on_a_model_without_fim_tokens_is_400(openai_client) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.completions.create(model=MODEL, prompt="def add(a, b):", suffix="    return c")
    assert caught.value.body["code"] == "fim_not_supported"


def test_client_disconnect_mid_stream_frees_its_place(live_server, openai_client) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a very long story."}],
            "max_tokens": 1500, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", f"{live_server.openai_base}/chat/completions", json=body,
                      headers=live_server.headers, timeout=60) as response:
        lines = response.iter_lines()
        received = [next(lines) for _ in range(6)]
    assert any(line.startswith("data: ") for line in received)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        load = {m["id"]: m for m in httpx.get(f"{live_server.url}/health").json()["models"]}
        if load[MODEL]["in_flight"] == 0:
            break
        time.sleep(0.1)
    assert load[MODEL]["in_flight"] == 0
    after = openai_client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4, temperature=0
    )
    assert after.usage.completion_tokens >= 1


def test_eight_concurrent_streams_each_complete_and_well_formed(openai_client) -> None:
    prompts = [f"Write one sentence about the number {i}." for i in range(8)]
    results: dict[int, tuple[str, str | None, int]] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            stream = openai_client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": prompts[i]}], temperature=0, seed=i,
                max_tokens=24, stream=True, stream_options={"include_usage": True},
            )
            text, finish, usage = "", None, 0
            for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
                    finish = chunk.choices[0].finish_reason or finish
                elif chunk.usage:
                    usage = chunk.usage.completion_tokens
            results[i] = (text, finish, usage)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors and len(results) == 8
    for i in range(8):
        text, finish, usage = results[i]
        assert text and finish in ("stop", "length") and 1 <= usage <= 24
        alone = openai_client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": prompts[i]}], temperature=0, seed=i, max_tokens=24,
        )
        assert text == alone.choices[0].message.content
