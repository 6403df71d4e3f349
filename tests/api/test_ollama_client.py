"""The Ollama surface end to end: real model, real server on loopback, the official `ollama` client."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import jsonschema
import numpy as np
import ollama
import openai
import pytest

MODEL = "smollm2-135m-instruct"
EMBED_MODEL = "all-minilm-l6-v2"
SYSTEM = "You are a helpful assistant."
QUESTION = "What is the capital of France?"
GREEDY = {"temperature": 0, "num_predict": 32}

pytestmark = pytest.mark.model


@pytest.fixture
def client(live_server) -> Iterator[ollama.Client]:  # type: ignore[no-untyped-def]
    made = ollama.Client(host=live_server.url, headers=live_server.headers, timeout=120)
    yield made
    made._client.close()  # the ollama client never closes its httpx pool (a ResourceWarning, an error here)


def chat_messages() -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]


def test_generate_answers_with_ollamas_metrics(client: ollama.Client) -> None:
    reply = client.generate(model=MODEL, prompt=QUESTION, system=SYSTEM, options=GREEDY)
    assert "Paris" in reply.response
    assert reply.done is True and reply.done_reason == "stop" and reply.model == MODEL
    assert reply.prompt_eval_count > 5 and 0 < reply.eval_count <= 32
    assert reply.eval_duration > 0 and reply.prompt_eval_duration > 0
    assert reply.total_duration >= reply.eval_duration + reply.prompt_eval_duration
    assert reply.created_at.endswith("Z")


def test_generate_streams_by_default_the_same_text(client: ollama.Client, live_server) -> None:  # type: ignore[no-untyped-def]
    whole = client.generate(model=MODEL, prompt=QUESTION, system=SYSTEM, options=GREEDY)
    parts = list(client.generate(model=MODEL, prompt=QUESTION, system=SYSTEM, options=GREEDY, stream=True))
    assert len(parts) > 2
    assert "".join(p.response for p in parts) == whole.response
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert parts[-1].done_reason == "stop" and parts[-1].eval_count == whole.eval_count
    # A raw HTTP request without "stream" is streamed too, as NDJSON, exactly as Ollama does.
    body = {"model": MODEL, "prompt": QUESTION, "system": SYSTEM, "options": GREEDY}
    url = f"{live_server.url}/api/generate"
    response = httpx.post(url, json=body, headers=live_server.headers, timeout=120)
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert "".join(line["response"] for line in lines) == whole.response and lines[-1]["done"] is True


def test_num_predict_caps_the_answer(client: ollama.Client) -> None:
    reply = client.generate(model=MODEL, prompt="Write a long story about a dragon.",
                            options={"temperature": 0, "num_predict": 3})
    assert reply.done_reason == "length" and reply.eval_count == 3


def test_num_predict_beyond_the_context_is_a_cap_not_an_error(client: ollama.Client) -> None:
    reply = client.generate(model=MODEL, prompt=QUESTION, system=SYSTEM,
                            options={"temperature": 0, "num_predict": 100_000, "num_ctx": 100_000})
    assert "Paris" in reply.response and reply.done_reason == "stop"


def test_raw_generate_bypasses_the_template(client: ollama.Client) -> None:
    templated = client.generate(model=MODEL, prompt=QUESTION, system=SYSTEM, options=GREEDY)
    prompt = (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{QUESTION}<|im_end|>\n"
              "<|im_start|>assistant\n")
    raw = client.generate(model=MODEL, prompt=prompt, raw=True, options={**GREEDY, "stop": ["<|im_end|>"]})
    assert raw.response.strip() == templated.response.strip()
    bare = client.generate(model=MODEL, prompt=QUESTION, raw=True, options={**GREEDY, "num_predict": 4})
    assert bare.prompt_eval_count < templated.prompt_eval_count


def test_chat_answers_and_streams_the_same_text(client: ollama.Client) -> None:
    whole = client.chat(model=MODEL, messages=chat_messages(), options=GREEDY)
    assert "Paris" in whole.message.content and whole.message.role == "assistant"
    assert whole.done_reason == "stop" and whole.eval_count > 0
    parts = list(client.chat(model=MODEL, messages=chat_messages(), options=GREEDY, stream=True))
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert parts[-1].done and parts[-1].prompt_eval_count == whole.prompt_eval_count
    assert not any(p.done for p in parts[:-1])


def test_chat_format_json_is_a_json_object(client: ollama.Client) -> None:
    reply = client.chat(model=MODEL, format="json", options={"temperature": 0, "num_predict": 64},
                        messages=[{"role": "user", "content": "Describe a cat as JSON."}])
    assert isinstance(json.loads(reply.message.content), dict)


def test_chat_format_schema_validates(client: ollama.Client) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                               "country": {"type": "string", "maxLength": 20}},
              "required": ["city", "country"], "additionalProperties": False}
    reply = client.chat(model=MODEL, format=schema, options={"temperature": 0, "num_predict": 64},
                        messages=[{"role": "system", "content": SYSTEM},
                                  {"role": "user", "content": f"{QUESTION} Answer as JSON."}])
    assert reply.done_reason == "stop"
    jsonschema.validate(json.loads(reply.message.content), schema)


def test_generate_format_json(client: ollama.Client) -> None:
    reply = client.generate(model=MODEL, prompt="List two colours as JSON.", format="json",
                            options={"temperature": 0, "num_predict": 48})
    assert isinstance(json.loads(reply.response), dict)


def test_load_calls(client: ollama.Client) -> None:
    assert client.generate(model=MODEL).done_reason == "load"
    assert client.chat(model=MODEL, messages=[]).done_reason == "load"


def cosine(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a), np.asarray(b)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def test_embed_puts_a_paraphrase_closer_than_an_unrelated_sentence(client: ollama.Client) -> None:
    texts = ["The cat sat on the mat.", "A cat was sitting on the rug.", "Stock markets fell sharply today."]
    reply = client.embed(model=EMBED_MODEL, input=texts)
    vectors = reply.embeddings
    assert len(vectors) == 3 and all(len(v) == 384 for v in vectors)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2
    assert reply.prompt_eval_count > 10 and reply.model == EMBED_MODEL
    single = client.embed(model=EMBED_MODEL, input=texts[0])
    assert np.allclose(single.embeddings[0], vectors[0], atol=1e-4)


def test_older_embeddings_route_agrees_with_embed(client: ollama.Client) -> None:
    old = client.embeddings(model=EMBED_MODEL, prompt="The cat sat on the mat.")
    new = client.embed(model=EMBED_MODEL, input="The cat sat on the mat.")
    assert len(old.embedding) == 384
    assert np.allclose(old.embedding, new.embeddings[0], atol=1e-4)


def test_tags_list_generate_and_embed_models(client: ollama.Client) -> None:
    models = {m.model: m for m in client.list().models}
    assert {MODEL, EMBED_MODEL} <= set(models)
    smol = models[MODEL]
    assert smol.details.format == "gguf" and smol.details.family == "llama"
    assert smol.details.quantization_level == "Q4_1" and smol.details.parameter_size == "135M"
    assert smol.size > 50_000_000 and len(smol.digest) == 64 and smol.modified_at is not None


def test_show_describes_the_model(client: ollama.Client, live_server) -> None:  # type: ignore[no-untyped-def]
    shown = client.show(MODEL)
    assert shown.capabilities == ["completion", "tools"]
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == live_server.settings.engine.context_length
    assert f"num_ctx {live_server.settings.engine.context_length}" in shown.parameters.splitlines()
    assert "<|im_start|>" in shown.template and shown.details.family == "llama"
    assert client.show(EMBED_MODEL).capabilities == ["embedding"]


def test_ps_lists_loaded_models(client: ollama.Client) -> None:
    loaded = {m.model: m for m in client.ps().models}
    assert {MODEL, EMBED_MODEL} <= set(loaded)
    assert loaded[MODEL].size_vram == 0 and loaded[MODEL].expires_at is not None
    assert loaded[MODEL].context_length > 0


def test_version_is_semver(client: ollama.Client) -> None:
    response = client._client.get("/api/version")  # no version() helper: the client's own session and key
    assert response.status_code == 200
    major, minor, patch = (int(part) for part in response.json()["version"].split("."))
    assert (major, minor) >= (0, 5)


def test_unknown_model_is_ollamas_404(client: ollama.Client) -> None:
    for call in (lambda: client.chat(model="llama9", messages=[{"role": "user", "content": "hi"}]),
                 lambda: list(client.generate(model="llama9", prompt="hi", stream=True)),
                 lambda: client.embed(model="llama9", input="hi"),
                 lambda: client.show("llama9")):
        with pytest.raises(ollama.ResponseError) as caught:
            call()
        assert caught.value.status_code == 404
        assert caught.value.error == 'model "llama9" not found'


def test_bad_body_is_a_400(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model=MODEL, messages=[{"role": "robot", "content": "hi"}])
    assert caught.value.status_code == 400 and "role" in caught.value.error
    with pytest.raises(ollama.ResponseError) as caught:
        client.generate(model=MODEL, prompt="hi", options={"temperature": -1})
    assert caught.value.status_code == 400 and "temperature" in caught.value.error
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model=EMBED_MODEL, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 400 and "does not support chat" in caught.value.error


def test_pull_push_create_delete_are_501_naming_models_add(client: ollama.Client) -> None:
    for call in (lambda: client.pull("llama3.2"), lambda: client.push("me/model"),
                 lambda: client.create(model="mine", from_=MODEL), lambda: client.delete(MODEL)):
        with pytest.raises(ollama.ResponseError) as caught:
            call()
        assert caught.value.status_code == 501
        assert "garrison models add" in caught.value.error


def test_fim_on_a_model_without_fim_tokens_is_a_clear_400(client: ollama.Client, openai_client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ollama.ResponseError) as caught:
        client.generate(model=MODEL, prompt="def add(a, b):\n    ", suffix="\n\nprint(add(1, 2))")
    assert caught.value.status_code == 400
    assert f'model "{MODEL}" does not support insert' in caught.value.error
    with pytest.raises(openai.BadRequestError) as bad:
        openai_client.completions.create(model=MODEL, prompt="def f():\n    ", suffix="\n", max_tokens=8)
    assert bad.value.code == "fim_not_supported" and MODEL in bad.value.message


def test_requests_without_the_key_are_refused(live_server) -> None:  # type: ignore[no-untyped-def]
    assert live_server.api_key  # the shared live server always runs with auth on
    anonymous = ollama.Client(host=live_server.url)
    with pytest.raises(ollama.ResponseError) as caught:
        anonymous.list()
    anonymous._client.close()
    assert caught.value.status_code == 401 and isinstance(caught.value.error, str)
