"""Ollama routes over a scripted engine: NDJSON framing, mid-stream errors, error shapes, num_predict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from fakes import ScriptedEngine, service
from garrison.api.app import create_app
from garrison.settings import load_settings

CONTEXT = 64


def OllamaScriptedEngine(pieces: list[str], fail_after_first: bool = False) -> ScriptedEngine:  # noqa: N802
    """The shared scripted engine as these tests use it: Ollama-like usage, a 64-token context."""
    return ScriptedEngine(pieces, prompt_tokens=4, fail_after_first=fail_after_first, context=CONTEXT)


def make_app(engine: ScriptedEngine, tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = load_settings(home=tmp_path, engine={"embeddings": False}, auth={"enabled": False})
    return create_app(settings, service({"fake": engine}, settings, CONTEXT))


def http(app) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def lines(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line]


CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}


async def test_streams_are_ndjson_by_default_and_end_with_metrics(tmp_path: Path) -> None:
    async with http(make_app(OllamaScriptedEngine(["Hel", "lo"]), tmp_path)) as client:
        response = await client.post("/api/chat", json=CHAT)
    assert response.headers["content-type"].startswith("application/x-ndjson")
    parts = lines(response)
    assert [p["message"]["content"] for p in parts] == ["Hel", "lo", ""]
    assert [p["done"] for p in parts] == [False, False, True]
    assert "done_reason" not in parts[0]
    last = parts[-1]
    assert (last["done_reason"], last["eval_count"], last["prompt_eval_count"]) == ("stop", 2, 4)
    assert last["eval_duration"] == 20 and last["total_duration"] >= 30
    assert all(p["created_at"].endswith("Z") for p in parts)


async def test_error_mid_stream_is_a_final_error_line(tmp_path: Path) -> None:
    app = make_app(OllamaScriptedEngine(["a", "b"], fail_after_first=True), tmp_path)
    async with http(app) as client:
        response = await client.post("/api/generate", json={"model": "fake", "prompt": "hi"})
    parts = lines(response)
    assert response.status_code == 200
    assert parts[0] == {**parts[0], "response": "a", "done": False}
    assert parts[-1] == {"error": "the engine failed while generating: RuntimeError"}
    assert "Traceback" not in response.text
    ollama_client = ollama.AsyncClient(host="http://test", transport=httpx.ASGITransport(app=app))
    received: list[str] = []
    with pytest.raises(ollama.ResponseError, match="engine failed"):
        async for part in await ollama_client.generate(model="fake", prompt="hi", stream=True):
            received.append(part.response or "")
    assert received == ["a"]


@pytest.mark.parametrize("stream", [True, False])
async def test_num_predict_past_the_context_generates_until_it_is_full(tmp_path: Path, stream: bool) -> None:
    engine = OllamaScriptedEngine(["ok"])
    async with http(make_app(engine, tmp_path)) as client:
        response = await client.post("/api/generate", json={
            "model": "fake", "prompt": "hi", "stream": stream, "options": {"num_predict": 1000}})
    assert response.status_code == 200
    assert lines(response)[-1]["done"] is True
    assert engine.budgets == [1000, None]


async def test_a_prompt_longer_than_the_context_is_still_a_400(tmp_path: Path) -> None:
    async with http(make_app(OllamaScriptedEngine(["ok"]), tmp_path)) as client:
        body = {"model": "fake", "prompt": "too long", "raw": True}
        response = await client.post("/api/generate", json=body)
    assert response.status_code == 400
    assert response.json() == {"error": "the prompt is 99 tokens"}


@pytest.mark.parametrize(("path", "body"), [
    ("/api/generate", {"model": "nope", "prompt": "hi"}),
    ("/api/generate", {"model": "nope"}),
    ("/api/chat", {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
    ("/api/embed", {"model": "nope", "input": "hi"}),
    ("/api/embeddings", {"model": "nope", "prompt": "hi"}),
    ("/api/show", {"model": "nope"}),
])
async def test_unknown_model_is_ollamas_404(tmp_path: Path, path: str, body: dict[str, Any]) -> None:
    engine = OllamaScriptedEngine(["ok"])
    async with http(make_app(engine, tmp_path)) as client:
        response = await client.post(path, json=body)
    assert response.status_code == 404
    assert response.json() == {"error": 'model "nope" not found'}
    assert engine.requests == []


async def test_generate_model_cannot_embed(tmp_path: Path) -> None:
    async with http(make_app(OllamaScriptedEngine(["ok"]), tmp_path)) as client:
        response = await client.post("/api/embed", json={"model": "fake", "input": "hi"})
    assert (response.status_code, response.json()) == (400, {"error": '"fake" does not support embeddings'})


@pytest.mark.parametrize(("body", "fragment"), [
    (b"{not json", "not valid JSON"),
    (b'{"messages": []}', "model"),
    (b'{"model": "fake", "messages": [{"role": "robot"}]}', "messages.0.role"),
    (b'{"model": "fake", "messages": [], "options": {"temperature": "hot"}}', "options.temperature"),
])
async def test_bad_bodies_are_400_in_ollamas_shape(tmp_path: Path, body: bytes, fragment: str) -> None:
    async with http(make_app(OllamaScriptedEngine(["ok"]), tmp_path)) as client:
        response = await client.post("/api/chat", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert list(response.json()) == ["error"] and fragment in response.json()["error"]


async def test_load_calls_answer_done_without_generating(tmp_path: Path) -> None:
    engine = OllamaScriptedEngine(["ok"])
    async with http(make_app(engine, tmp_path)) as client:
        generate = await client.post("/api/generate", json={"model": "fake:latest"})
        chat = await client.post("/api/chat", json={"model": "fake", "messages": [], "keep_alive": "5m"})
    assert generate.json()["done_reason"] == "load" and generate.json()["model"] == "fake"
    assert chat.json()["done_reason"] == "load" and chat.json()["message"]["content"] == ""
    assert engine.requests == []


async def test_latest_tag_reaches_the_untagged_model(tmp_path: Path) -> None:
    engine = OllamaScriptedEngine(["ok"])
    async with http(make_app(engine, tmp_path)) as client:
        response = await client.post("/api/chat", json={**CHAT, "model": "fake:latest", "stream": False})
    assert response.json()["message"]["content"] == "ok" and response.json()["model"] == "fake"
    assert engine.requests[0].model == "fake"


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/api/pull"), ("POST", "/api/push"), ("POST", "/api/create"), ("POST", "/api/blobs/sha256:ab"),
    ("POST", "/api/copy"), ("DELETE", "/api/delete"),
])
async def test_model_management_is_a_clear_501(tmp_path: Path, method: str, path: str) -> None:
    async with http(make_app(OllamaScriptedEngine(["ok"]), tmp_path)) as client:
        response = await client.request(method, path, json={"model": "x"})
    assert response.status_code == 501
    assert "garrison models add" in response.json()["error"] and path in response.json()["error"]


async def test_unknown_api_route_is_a_404_error_body(tmp_path: Path) -> None:
    async with http(make_app(OllamaScriptedEngine(["ok"]), tmp_path)) as client:
        response = await client.get("/api/nothing-here")
    assert response.status_code == 404 and list(response.json()) == ["error"]
