"""Every denial path through HTTP: 401 (who are you) vs 403 (not allowed), OpenAI and Ollama error shapes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from garrison.api.access import authorize
from garrison.security import Security, setup
from garrison.settings import Settings


def _error(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_valid_key_is_allowed(chat: Callable[..., httpx.Response], new_key: Callable[..., str]) -> None:
    response = chat(new_key())
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "pong"


def test_no_key_is_401_with_www_authenticate(chat: Callable[..., httpx.Response]) -> None:
    response = chat(None)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    error = _error(response)
    assert error["type"] == "authentication_error"
    assert "missing API key" in str(error["message"])


def test_malformed_header_and_malformed_key_are_401(client: TestClient, new_key: Callable[..., str]) -> None:
    token = new_key()
    for header in (f"Basic {token}", "Bearer", token, "Bearer not-a-garrison-key", f"Bearer {token}x"):
        response = client.post(
            "/v1/chat/completions", json={"model": "tiny", "messages": []}, headers={"Authorization": header}
        )
        assert response.status_code == 401, header
        assert "malformed" in str(_error(response)["message"]), header


def test_unknown_key_is_401(chat: Callable[..., httpx.Response], new_key: Callable[..., str]) -> None:
    token = new_key()
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    response = chat(forged)
    assert response.status_code == 401
    assert _error(response)["message"] == "unknown API key"


def test_revoked_key_is_401(
    chat: Callable[..., httpx.Response], new_key: Callable[..., str], security: Security
) -> None:
    token = new_key()
    key_id = token.split("_")[2]
    assert chat(token).status_code == 200
    security.keys.revoke(key_id)
    response = chat(token)
    assert response.status_code == 401
    assert f"API key '{key_id}' was revoked" in str(_error(response)["message"])


def test_expired_key_is_401(
    chat: Callable[..., httpx.Response], new_key: Callable[..., str], clock: Any
) -> None:
    token = new_key(expires_at=clock() + 60)
    assert chat(token).status_code == 200
    clock.advance(61)
    response = chat(token)
    assert response.status_code == 401
    assert "expired at" in str(_error(response)["message"])


def test_wrong_environment_is_401_saying_why(
    chat: Callable[..., httpx.Response], new_key: Callable[..., str]
) -> None:
    response = chat(new_key(env="dev"))
    assert response.status_code == 401
    error = _error(response)
    assert error["message"] == "this key belongs to the 'dev' environment; this server serves 'prod'"
    assert error["code"] == "wrong_environment"


def test_missing_scope_is_403(client: TestClient, new_key: Callable[..., str]) -> None:
    token = new_key(scopes=["chat"])
    response = client.post(
        "/v1/embeddings", json={"model": "embedder", "input": "x"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 403
    error = _error(response)
    assert error["type"] == "permission_error"
    assert "lacks the 'embeddings' scope" in str(error["message"])


def test_admin_scope_is_needed_for_admin_routes(client: TestClient, new_key: Callable[..., str]) -> None:
    token = new_key(scopes=["chat", "completions", "embeddings"])
    response = client.get("/admin/keys", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert "lacks the 'admin' scope" in str(_error(response)["message"])


def test_model_not_allowed_is_403(chat: Callable[..., httpx.Response], new_key: Callable[..., str]) -> None:
    token = new_key(models=["tiny"])
    assert chat(token, model="tiny").status_code == 200
    response = chat(token, model="big")
    assert response.status_code == 403
    error = _error(response)
    assert error["param"] == "model"
    assert "not allowed the model 'big'" in str(error["message"])


def test_ollama_path_gets_the_ollama_error_shape(client: TestClient, new_key: Callable[..., str]) -> None:
    response = client.post("/api/chat", json={"model": "tiny", "messages": []})
    assert response.status_code == 401
    assert response.json() == {"error": "missing API key: send 'Authorization: Bearer <key>'"}
    token = new_key(models=["tiny"])
    response = client.post("/api/chat", json={"model": "big"}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert isinstance(response.json()["error"], str)


def test_health_is_public_and_everything_else_needs_a_key(client: TestClient) -> None:
    assert client.get("/health").status_code == 200
    assert client.get("/v1/models").status_code == 401
    assert (
        client.get("/no/such/route").status_code == 401
    )  # deny by default: unknown paths are not enumerable
    assert client.get("/admin/keys").status_code == 401


def test_denial_happens_before_the_route_body_runs(
    security: Security, app_factory: Callable[[Security | None], FastAPI], new_key: Callable[..., str]
) -> None:
    app = app_factory(security)
    reached: list[str] = []

    @app.post("/v1/probe")
    async def probe(request: Request) -> dict[str, str]:
        await authorize(request, "completions", model="tiny")
        reached.append("engine")
        return {"ok": "yes"}

    with TestClient(app) as test_client:
        token = new_key(scopes=["chat"])
        response = test_client.post("/v1/probe", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403, response.text
    assert reached == []


def test_every_response_carries_a_request_id(client: TestClient, new_key: Callable[..., str]) -> None:
    token = new_key()
    ok = client.get("/v1/models", headers={"Authorization": f"Bearer {token}"})
    denied = client.get("/v1/models")
    public = client.get("/health")
    ids = {r.headers["x-request-id"] for r in (ok, denied, public)}
    assert len(ids) == 3 and all(len(i) == 32 for i in ids)
    chosen = client.get("/health", headers={"x-request-id": "trace-42.a:b"})
    assert chosen.headers["x-request-id"] != "trace-42.a:b"  # the server's id is always its own
    assert len(chosen.headers["x-request-id"]) == 32


def test_auth_disabled_allows_without_key(
    tmp_path: Path, app_factory: Callable[[Security | None], FastAPI]
) -> None:
    security = setup(Settings(home=tmp_path / "h", auth={"enabled": False}))
    try:
        assert security.bootstrap_key is None
        with TestClient(app_factory(security)) as test_client:
            response = test_client.post(
                "/v1/chat/completions", json={"model": "any", "messages": [{"role": "user", "content": "x"}]}
            )
            assert response.status_code == 200
            assert test_client.get("/admin/keys").status_code == 403  # no admin API without auth
        records = security.audit.query()
        assert [(r["event"], r["reason"]) for r in records] == [
            ("request.admitted", "auth disabled"),
            ("request.finished", "auth disabled"),
            ("request", "the admin API is off while auth is disabled; use the garrison CLI on the server"),
        ]
        assert records[1]["key_id"] is None and records[1]["completion_tokens"] == 5
    finally:
        security.close()
