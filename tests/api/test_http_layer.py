"""HTTP-layer behaviour with a scripted engine: admission (503), mid-stream errors, error shapes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from fakes import ScriptedEngine, service
from garrison.api.app import create_app
from garrison.settings import load_settings


def make_app(engine: ScriptedEngine, tmp_path: Path, max_queue: int = 0):  # type: ignore[no-untyped-def]
    settings = load_settings(home=tmp_path, engine={"max_concurrent_sequences": 1, "max_queue": max_queue,
                                                    "embeddings": False}, auth={"enabled": False})
    return create_app(settings, service({"fake": engine}, settings))


def client(app) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}


async def test_full_queue_answers_503_with_retry_after(tmp_path: Path) -> None:
    engine = ScriptedEngine(["a", "b"])
    engine.block = True
    app = make_app(engine, tmp_path)
    async with client(app) as http:
        first = asyncio.create_task(http.post("/v1/chat/completions", json=CHAT))
        await asyncio.sleep(0.05)
        second = await http.post("/v1/chat/completions", json=CHAT)
        assert second.status_code == 503
        assert int(second.headers["retry-after"]) >= 1
        assert second.json()["error"]["code"] == "queue_full"
        engine.release.set()
        assert (await first).json()["choices"][0]["message"]["content"] == "ab"


async def test_error_mid_stream_is_a_final_event(tmp_path: Path) -> None:
    app = make_app(ScriptedEngine(["a", "b"], fail_after_first=True), tmp_path)
    async with client(app) as http:
        response = await http.post("/v1/chat/completions", json={**CHAT, "stream": True})
    events = [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]
    assert response.status_code == 200
    assert json.loads(events[1])["choices"][0]["delta"]["content"] == "a"
    assert json.loads(events[-2])["error"]["type"] == "server_error"
    assert events[-1] == "[DONE]"
    assert "Traceback" not in response.text


async def test_engine_failure_non_streaming_is_500_without_traceback(tmp_path: Path) -> None:
    app = make_app(ScriptedEngine(["a", "b"], fail_after_first=True), tmp_path)
    async with client(app) as http:
        response = await http.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 500
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text


@pytest.mark.parametrize("path, method", [("/v1/nowhere", "GET"), ("/v1/chat/completions", "GET")])
async def test_unknown_routes_and_methods_use_the_error_shape(tmp_path: Path, path: str, method: str) -> None:
    app = make_app(ScriptedEngine(["a"]), tmp_path)
    async with client(app) as http:
        response = await http.request(method, path)
    assert response.status_code in (404, 405)
    assert "message" in response.json()["error"]


async def test_streamed_body_over_limit_is_413(tmp_path: Path) -> None:
    app = make_app(ScriptedEngine(["a"]), tmp_path)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(6):
            yield b" " * 1024 * 1024

    async with client(app) as http:
        response = await http.post("/v1/chat/completions", content=chunks(),
                                   headers={"content-type": "application/json"})
    assert response.status_code == 413
