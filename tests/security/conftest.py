"""Fixtures for access-control tests: a movable clock, real SQLite under tmp_path, and a tiny app."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient

from garrison.api import admin
from garrison.api.access import RequestContextMiddleware, authorize
from garrison.api.context import get_context
from garrison.api.errors import install_error_handlers
from garrison.security import Security, setup
from garrison.settings import Settings

START = 1_750_000_000.0  # 2025-06-15T15:06:40Z


class FakeClock:
    """A wall clock tests move by hand."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_app(security: Security | None) -> FastAPI:
    """Middleware, admin router and dummy routes that call `authorize` the way real routers do."""
    app = FastAPI()
    app.state.security = security
    install_error_handlers(app)
    app.include_router(admin.router)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        await authorize(request, None)
        return {"object": "list", "data": [{"id": "tiny"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        await authorize(request, "chat", model=body["model"], estimated_tokens=body.get("max_tokens", 10))
        ctx = get_context(request)
        ctx.prompt_text = body["messages"][-1]["content"]
        ctx.prompt_tokens = body.get("prompt_tokens", 7)
        if body.get("stream"):
            return StreamingResponse(
                _sse(ctx, body.get("completion_tokens", 5)), media_type="text/event-stream"
            )
        ctx.completion_tokens = body.get("completion_tokens", 5)
        ctx.response_text = "pong"
        return {
            "object": "chat.completion",
            "choices": [{"message": {"role": "assistant", "content": "pong"}}],
        }

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> dict[str, Any]:
        body = await request.json()
        await authorize(request, "embeddings", model=body["model"], estimated_tokens=3)
        get_context(request).prompt_tokens = 3
        return {"object": "list", "data": [{"embedding": [0.0, 1.0]}]}

    @app.post("/api/chat")
    async def ollama_chat(request: Request) -> StreamingResponse:
        body = await request.json()
        await authorize(request, "chat", model=body["model"], estimated_tokens=10)
        return StreamingResponse(_ndjson(get_context(request)), media_type="application/x-ndjson")

    app.add_middleware(RequestContextMiddleware)
    return app


async def _sse(ctx: Any, completion_tokens: int) -> AsyncIterator[bytes]:
    for word in ("po", "ng"):
        yield f"data: {json.dumps({'choices': [{'delta': {'content': word}}]})}\n\n".encode()
    ctx.completion_tokens = completion_tokens
    ctx.response_text = "pong"
    yield b"data: [DONE]\n\n"


async def _ndjson(ctx: Any) -> AsyncIterator[bytes]:
    yield b'{"message":{"role":"assistant","content":"po"},"done":false}\n'
    ctx.prompt_tokens, ctx.completion_tokens = 4, 2
    yield b'{"message":{"role":"assistant","content":"ng"},"done":true}\n'


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", auth={"env": "prod"})


@pytest.fixture
def security(settings: Settings, clock: FakeClock) -> Iterator[Security]:
    sec = setup(settings, clock=clock)
    yield sec
    sec.close()


@pytest.fixture
def app_factory() -> Callable[[Security | None], FastAPI]:
    return make_app


@pytest.fixture
def client(security: Security) -> Iterator[TestClient]:
    with TestClient(make_app(security), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def admin_headers(security: Security) -> dict[str, str]:
    assert security.bootstrap_key is not None
    return {"Authorization": f"Bearer {security.bootstrap_key}"}


@pytest.fixture
def new_key(security: Security) -> Callable[..., str]:
    """Create a key (prod, chat scopes, any model unless told otherwise) and return its secret."""

    def make(name: str = "test", env: str = "prod", **fields: Any) -> str:
        return security.keys.create(name=name, env=env, **fields).token

    return make


@pytest.fixture
def chat(client: TestClient) -> Callable[..., httpx.Response]:
    """POST a chat completion with `token` (None: no Authorization header); extra keywords go in the body."""

    def call(token: str | None, model: str = "tiny", **extra: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        body = {"model": model, "messages": [{"role": "user", "content": "ping"}], **extra}
        return client.post("/v1/chat/completions", json=body, headers=headers)

    return call
