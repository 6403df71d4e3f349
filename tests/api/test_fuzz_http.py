"""Schemathesis over the app's own OpenAPI document, on a real server (loopback, auth on) over the scripted
engine: whatever the body, no route answers 5xx (bar 501, the Ollama routes garrison does not serve) and every
error is in its surface's shape. Hand-written cases the fuzz found (or could miss) follow."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from fakes import ScriptedEmbedder, ScriptedEngine, service
from garrison.api.app import create_app
from garrison.api.server import background_server
from garrison.documents.knowledge import attach_documents
from garrison.security import setup
from garrison.settings import load_settings

EMBED_PATHS = ("/v1/embeddings", "/api/embed", "/api/embeddings")


@dataclass
class FuzzServer:
    url: str
    admin: str
    low: str  # a key with the `chat` scope only


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzServer]:
    home: Path = tmp_path_factory.mktemp("fuzz-home")
    docs = home / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Hello\n\nThe launch code is tea.\n")
    config = load_settings(
        home=home, host="127.0.0.1", port=0, max_body_bytes=256 * 1024,
        engine={"max_concurrent_sequences": 4, "max_queue": 8, "embeddings": False},
        auth={"enabled": True, "env": "dev"},
        documents={"roots": [{"path": str(docs), "collection": "kb", "upload": True}]},
    )
    config.ensure_home()
    security = setup(config)
    inference = service({"fake": ScriptedEngine(["a", "b"]), "emb": ScriptedEmbedder()}, config)
    documents = attach_documents(config, inference, security.store)
    app = create_app(config, inference, security, documents, owns_security=True)
    low = security.keys.create(name="low", env="dev", scopes=("chat",))
    with background_server(config, app) as url:
        yield FuzzServer(url=url, admin=security.bootstrap_key or "", low=low.token)


def assert_error_shape(path: str, response: Any) -> None:
    """5xx only as 501 (unserved Ollama routes) or 503; a 4xx/5xx body is the surface's error shape."""
    status = response.status_code
    assert status < 500 or status in (501, 503), f"{status} {path}: {response.text[:300]}"
    if status < 400 or not response.content:  # HEAD answers carry no body
        return
    body = json.loads(response.content)
    if path.startswith("/api/"):
        assert isinstance(body, dict) and isinstance(body.get("error"), str), body
    else:
        error = body.get("error") if isinstance(body, dict) else None
        assert isinstance(error, dict) and {"message", "type", "param", "code"} <= set(error), body


@pytest.fixture(scope="module")
def api_schema(fuzz_server: FuzzServer) -> Any:
    return schemathesis.openapi.from_url(
        f"{fuzz_server.url}/openapi.json", headers={"Authorization": f"Bearer {fuzz_server.admin}"})


_turn = itertools.count()


def test_no_route_answers_5xx_or_another_error_shape(api_schema: Any, fuzz_server: FuzzServer) -> None:
    """Every operation of the OpenAPI document, fuzzed (schemathesis' lazy pytest fixture needs pytest < 9)."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 30

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def fuzz(case: Any) -> None:
            # Most bodies name a served model, so generation, embeddings and the pipeline are reached.
            if isinstance(case.body, dict) and next(_turn) % 4:
                case.body["model"] = "emb" if case.operation.path in EMBED_PATHS else "fake"
            key = fuzz_server.low if next(_turn) % 3 == 0 else fuzz_server.admin
            response = case.call(headers={"Authorization": f"Bearer {key}"}, timeout=30)
            assert_error_shape(f"{case.operation.path}", response)

        fuzz()


CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
GENERATE = {"model": "fake", "prompt": "hi"}
SURFACES = [("/v1/chat/completions", CHAT), ("/v1/completions", GENERATE), ("/api/chat", CHAT),
            ("/api/generate", GENERATE)]


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(("path", "body"), SURFACES)
@pytest.mark.parametrize("depth", [101, 100_000])
def test_deeply_nested_bodies_are_400(fuzz_server: FuzzServer, path: str, body: dict[str, Any], depth: int) -> None:
    """100 000 nested arrays were a RecursionError and a 500 in the JSON-body middleware."""
    raw = json.dumps({**body, "metadata": None}).encode().replace(b"null", _nested(depth))
    response = httpx.post(f"{fuzz_server.url}{path}", content=raw, timeout=30, headers={
        "Authorization": f"Bearer {fuzz_server.admin}", "Content-Type": "application/json"})
    assert response.status_code == 400
    assert_error_shape(path, response)
    assert "nests arrays and objects more than 100 deep" in response.text


def test_nesting_up_to_the_bound_is_accepted(fuzz_server: FuzzServer) -> None:
    raw = json.dumps({**CHAT, "metadata": None}).encode().replace(b"null", _nested(90))
    response = httpx.post(f"{fuzz_server.url}/v1/chat/completions", content=raw, timeout=30, headers={
        "Authorization": f"Bearer {fuzz_server.admin}", "Content-Type": "application/json"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("n", [129, 10**30])
def test_n_past_openais_bound_is_400_not_memory(fuzz_server: FuzzServer, n: int) -> None:
    """n = 10**30 built that many choices after the engine had answered: MemoryError, then the OOM killer."""
    response = httpx.post(f"{fuzz_server.url}/v1/chat/completions", json={**CHAT, "n": n}, timeout=30,
                          headers={"Authorization": f"Bearer {fuzz_server.admin}"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "n"
