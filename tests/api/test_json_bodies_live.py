"""JSON bodies are accepted whatever their Content-Type (curl -d sends a form type); non-JSON bodies are 400s
in the surface's error shape (real server, raw bodies as curl and LiteLLM send them)."""

from __future__ import annotations

import json

import httpx
import pytest

pytestmark = pytest.mark.model

MODEL = "smollm2-135m-instruct"
CHAT = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
OLLAMA = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "stream": False,
                     "options": {"num_predict": 2}})
TYPES = [None, "application/x-www-form-urlencoded", "text/plain", "application/octet-stream"]


def _post(live_server, path: str, body: str | bytes, content_type: str | None) -> httpx.Response:  # type: ignore[no-untyped-def]
    headers = dict(live_server.headers)
    if content_type is not None:
        headers["content-type"] = content_type
    return httpx.post(f"{live_server.url}{path}", headers=headers, content=body, timeout=120)


@pytest.mark.parametrize("content_type", TYPES)
def test_json_is_accepted_whatever_the_content_type(live_server, content_type: str | None) -> None:
    chat = _post(live_server, "/v1/chat/completions", CHAT, content_type)
    assert chat.status_code == 200, chat.text
    assert chat.json()["usage"]["completion_tokens"] >= 1
    ollama = _post(live_server, "/api/chat", OLLAMA, content_type)
    assert ollama.status_code == 200, ollama.text
    assert ollama.json()["done"] is True
    key = _post(live_server, "/admin/keys", json.dumps({"name": "curl-made", "scopes": ["chat"]}), content_type)
    assert key.status_code == 201, key.text


@pytest.mark.parametrize("content_type", [*TYPES, "application/json"])
def test_a_body_that_is_not_json_is_a_400_saying_so(live_server, content_type: str | None) -> None:
    for body in (f"model={MODEL}&prompt=hi", b"\xff\xfe{}", '{"model": "x",'):
        openai = _post(live_server, "/v1/chat/completions", body, content_type)
        assert openai.status_code == 400, openai.text
        assert "not valid JSON" in openai.json()["error"]["message"]
        assert openai.json()["error"]["type"] == "invalid_request_error"
        ollama = _post(live_server, "/api/generate", body, content_type)
        assert ollama.status_code == 400, ollama.text
        assert set(ollama.json()) == {"error"} and "not valid JSON" in ollama.json()["error"]


def test_unpaired_surrogates_are_a_400_not_a_500(live_server) -> None:
    for path, body in (("/admin/keys", '{"name": "x", "models": ["\\udfff"]}'),
                       ("/v1/chat/completions", CHAT.replace('"Hi"', '"\\ud800"')),
                       ("/api/chat", OLLAMA.replace('"Hi"', '"\\ud800"'))):
        response = _post(live_server, path, body, "application/json")
        assert response.status_code == 400, (path, response.text)
        assert "surrogate" in response.text
    paired = _post(live_server, "/v1/chat/completions", CHAT.replace('"Hi"', '"\\ud83d\\ude00"'), "application/json")
    assert paired.status_code == 200, paired.text
