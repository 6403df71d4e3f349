"""The seam: a third surface is a translator and a framer; stages see every surface's requests.

Over a scripted engine (the HTTP layer and the pipeline, not a model) with real SQLite security and audit.
"""

from __future__ import annotations

import ast
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.responses import Response
from fastapi.testclient import TestClient

import garrison
from fakes import ScriptedEngine, service
from garrison.api.app import create_app
from garrison.api.deps import GenerationDep
from garrison.domain import (
    ChatMessage,
    Completion,
    GenerationDone,
    GenerationEvent,
    GenerationRequest,
    TokenDelta,
)
from garrison.errors import GarrisonError, InvalidRequest
from garrison.pipeline import Caller
from garrison.security import Security, setup
from garrison.settings import Settings


class TextFramer:
    """A throwaway surface's wire format: the text as it comes, then the finish reason in brackets."""

    media_type = "text/plain"

    def chunk(self, delta: TokenDelta) -> list[bytes]:
        return [delta.text.encode()] if delta.text else []

    def done(self, done: GenerationDone) -> list[bytes]:
        return [f" [{done.finish_reason}]".encode()]

    def error(self, exc: GarrisonError) -> list[bytes]:
        return [f" [error: {exc.message}]".encode()]

    def whole(self, result: Completion) -> dict[str, Any]:
        return {"said": result.text}


plain = APIRouter()


@plain.post("/plain/say")
async def say(body: dict[str, Any], generation: GenerationDep) -> Response:
    request = GenerationRequest(model=body["model"], messages=[ChatMessage("user", body["text"])])
    return await generation.respond(request, TextFramer(), stream=bool(body.get("stream")))


class Shout:
    """A stage: refuses a forbidden word, notes what it saw, and upper-cases every answer."""

    name = "shout"

    async def before(self, request: GenerationRequest, caller: Caller) -> GenerationRequest:
        text = " ".join(m.content for m in request.messages or [])
        if "forbidden" in text:
            raise InvalidRequest("the shout stage refuses that word", code="policy_violation")
        request.annotations["shout"] = {"caller": caller.name, "words": len(text.split())}
        return request

    async def after(
        self, request: GenerationRequest, caller: Caller, events: AsyncIterator[GenerationEvent]
    ) -> AsyncIterator[GenerationEvent]:
        async for event in events:
            yield TokenDelta(event.text.upper(), event.tokens) if isinstance(event, TokenDelta) else event


@pytest.fixture
def security(tmp_path: Path) -> Iterator[Security]:
    sec = setup(Settings(home=tmp_path / "home"))
    yield sec
    sec.close()


@pytest.fixture
def client(security: Security, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(home=tmp_path / "home", engine={"embeddings": False})
    inference = service({"tiny": ScriptedEngine(["po", "ng"], prompt_tokens=7, completion_tokens=5)}, settings)
    inference.stages.append(Shout())
    app = create_app(settings, inference, security)
    app.include_router(plain)  # the whole third surface: a translator and a framer in a route
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_third_surface_gets_auth_quotas_stages_and_audit_for_free(
    client: TestClient, security: Security
) -> None:
    assert security.bootstrap_key is not None
    admin = _auth(security.bootstrap_key)
    assert client.post("/plain/say", json={"model": "tiny", "text": "hi"}).status_code == 401
    whole = client.post("/plain/say", json={"model": "tiny", "text": "hi there"}, headers=admin)
    assert whole.json() == {"said": "PONG"}  # the stage's after() ran
    streamed = client.post("/plain/say", json={"model": "tiny", "text": "hi", "stream": True}, headers=admin)
    assert streamed.text == "PONG [stop]"
    embed_only = security.keys.create(name="e", env="dev", scopes=["embeddings"]).token
    denied = client.post("/plain/say", json={"model": "tiny", "text": "hi"}, headers=_auth(embed_only))
    assert denied.status_code == 403 and "lacks the 'chat' scope" in denied.text
    refused = client.post("/plain/say", json={"model": "tiny", "text": "a forbidden word"}, headers=admin)
    assert refused.status_code == 400 and "shout stage refuses" in refused.text

    records = security.audit.query(limit=None)
    mine = [r for r in records if r["route"] == "/plain/say"]
    assert [(r["event"], r["status"]) for r in mine] == [
        ("request", 401),
        ("request.admitted", 102), ("request.finished", 200),
        ("request.admitted", 102), ("request.finished", 200),
        ("request", 403), ("request", 400),
    ]
    assert json.loads(mine[2]["details"])["shout"] == {"caller": "admin", "words": 2}
    assert mine[6]["error_code"] == "policy_violation" and mine[6]["decision"] == "error"
    usage = security.usage.rows()
    assert [(u.model, u.requests, u.prompt_tokens, u.completion_tokens) for u in usage] == [("tiny", 2, 14, 10)]


def test_stages_see_the_openai_and_ollama_surfaces_alike(client: TestClient, security: Security) -> None:
    assert security.bootstrap_key is not None
    admin = _auth(security.bootstrap_key)
    chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
    openai = client.post("/v1/chat/completions", json=chat, headers=admin).json()
    ollama = client.post("/api/chat", json={**chat, "stream": False}, headers=admin).json()
    assert openai["choices"][0]["message"]["content"] == ollama["message"]["content"] == "PONG"
    forbidden = {**chat, "messages": [{"role": "user", "content": "forbidden"}]}
    assert client.post("/v1/chat/completions", json=forbidden, headers=admin).json()["error"]["code"] == (
        "policy_violation")
    assert "shout stage" in client.post("/api/chat", json=forbidden, headers=admin).json()["error"]


def test_routers_are_translators_that_import_nothing_from_security_or_audit() -> None:
    api = Path(garrison.__file__).parent / "api"
    for router in (api / "openai" / "router.py", api / "ollama" / "router.py"):
        tree = ast.parse(router.read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not {m for m in imported if m.startswith(("garrison.security", "garrison.audit"))}, router
