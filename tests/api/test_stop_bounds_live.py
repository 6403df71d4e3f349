"""Stop strings are bounded in count and length on both surfaces (each is scanned per token on the decode thread)."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.model

MODEL = "smollm2-135m-instruct"
MESSAGES = [{"role": "user", "content": "Say hi."}]
# The documented bounds (docs/engine.md): OpenAI's own 4 stops, 16 for Ollama, 64 characters each.
MAX_STOP_SEQUENCES_OPENAI, MAX_STOP_SEQUENCES_OLLAMA, MAX_STOP_CHARS = 4, 16, 64


def _post(live_server, path: str, body: dict) -> httpx.Response:  # type: ignore[no-untyped-def]
    return httpx.post(f"{live_server.url}{path}", headers=live_server.headers, json=body, timeout=120)


def test_openai_stops_are_bounded_in_count_and_length(live_server) -> None:
    for path, body in (("/v1/chat/completions", {"messages": MESSAGES}), ("/v1/completions", {"prompt": "Hi"})):
        most = ["x" * MAX_STOP_CHARS] * MAX_STOP_SEQUENCES_OPENAI
        assert _post(live_server, path, {"model": MODEL, **body, "max_tokens": 2, "stop": most}).status_code == 200
        for stop in (["a"] * (MAX_STOP_SEQUENCES_OPENAI + 1), "y" * (MAX_STOP_CHARS + 1), ["ok", "z" * 10_000]):
            response = _post(live_server, path, {"model": MODEL, **body, "max_tokens": 2, "stop": stop})
            assert response.status_code == 400, (path, response.text)
            error = response.json()["error"]
            assert error["param"] == "stop" and "stop" in error["message"]


def test_ollama_options_stop_is_bounded_in_count_and_length(live_server) -> None:
    for path, body in (("/api/chat", {"messages": MESSAGES}), ("/api/generate", {"prompt": "Hi"})):
        most = ["x" * MAX_STOP_CHARS] * MAX_STOP_SEQUENCES_OLLAMA
        ok = _post(live_server, path, {"model": MODEL, **body, "stream": False,
                                       "options": {"num_predict": 2, "stop": most}})
        assert ok.status_code == 200, ok.text
        for stop in (["a"] * (MAX_STOP_SEQUENCES_OLLAMA + 1), ["b"] * 10_000, "y" * (MAX_STOP_CHARS + 1)):
            response = _post(live_server, path, {"model": MODEL, **body, "stream": False,
                                                 "options": {"num_predict": 2, "stop": stop}})
            assert response.status_code == 400, (path, response.text[:200])
            assert set(response.json()) == {"error"} and "options.stop" in response.json()["error"]
