"""Fixtures for access-control tests: a movable clock, real SQLite under tmp_path, and a tiny app."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fakes import ScriptedEmbedder, ScriptedEngine, service
from garrison.api.app import create_app
from garrison.security import Security, setup
from garrison.settings import Settings

START = 1_750_000_000.0  # 2025-06-15T15:06:40Z
# Models the test app serves (one scripted engine for all): "pong" in two pieces, 7 prompt + 5 completion tokens.
MODELS = ("tiny", "big", "other", "m", "any")


class FakeClock:
    """A wall clock tests move by hand."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_app(security: Security | None, engine: ScriptedEngine | None = None) -> FastAPI:
    """The real app (middleware, pipeline, routers, admin API) over a scripted engine and embedder."""
    engine = engine or ScriptedEngine(["po", "ng"], prompt_tokens=7, completion_tokens=5)
    home = security.store.path.parent if security is not None else Path("/nonexistent")
    settings = Settings(home=home, engine={"embeddings": False})
    engines: dict[str, Any] = {name: engine for name in MODELS}
    engines["embedder"] = ScriptedEmbedder()
    return create_app(settings, service(engines, settings, context_length=512), security)


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
def engine() -> ScriptedEngine:
    return ScriptedEngine(["po", "ng"], prompt_tokens=7, completion_tokens=5)


@pytest.fixture
def client(security: Security, engine: ScriptedEngine) -> Iterator[TestClient]:
    with TestClient(make_app(security, engine), raise_server_exceptions=False) as test_client:
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
def chat(client: TestClient, engine: ScriptedEngine) -> Callable[..., httpx.Response]:
    """POST a chat completion with `token` (None: no Authorization header); extra keywords go in the body,
    except `prompt_tokens` and `completion_tokens`, the usage the scripted engine reports (7 and 5)."""

    def call(
        token: str | None, model: str = "tiny", prompt_tokens: int = 7, completion_tokens: int = 5, **extra: Any
    ) -> httpx.Response:
        engine.script(prompt_tokens, completion_tokens)
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        body = {"model": model, "messages": [{"role": "user", "content": "ping"}], **extra}
        return client.post("/v1/chat/completions", json=body, headers=headers)

    return call
