"""Request fields are validated strictly, as OpenAI and Ollama do: a wrong type or a non-finite number is a 400
naming the field; the ints-for-floats real clients send stay accepted (real server, raw JSON bodies)."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.model

MODEL = "smollm2-135m-instruct"
HEAD = '{"model": "' + MODEL + '", "messages": [{"role": "user", "content": "Hi"}], '


def chat(fields: str) -> str:
    """An OpenAI chat body as raw JSON text (json.dumps cannot write 1e309 or NaN)."""
    return HEAD + fields + "}"


def ollama(fields: str) -> str:
    return HEAD + '"stream": false, ' + fields + "}"


def _post(live_server, path: str, body: str) -> httpx.Response:  # type: ignore[no-untyped-def]
    headers = {**live_server.headers, "content-type": "application/json"}
    return httpx.post(f"{live_server.url}{path}", headers=headers, content=body, timeout=120)


@pytest.mark.parametrize(("fields", "field"), [
    ('"max_tokens": "5"', "max_tokens"),
    ('"max_tokens": 5.0', "max_tokens"),
    ('"max_tokens": true', "max_tokens"),
    ('"temperature": "0.5"', "temperature"),
    ('"temperature": 1e309', "temperature"),
    ('"top_p": NaN', "top_p"),
    ('"stream": "true"', "stream"),
    ('"seed": "42"', "seed"),
    ('"max_tokens": 2, "stop": 5', "stop"),
])
def test_openai_rejects_lenient_types_naming_the_field(live_server, fields: str, field: str) -> None:
    response = _post(live_server, "/v1/chat/completions", chat(fields))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field and error["message"].startswith(f"{field}:"), error


@pytest.mark.parametrize(("fields", "field"), [
    ('"options": {"temperature": 1e309}', "options.temperature"),
    ('"options": {"temperature": "0.5"}', "options.temperature"),
    ('"options": {"num_predict": "5"}', "options.num_predict"),
    ('"options": {"seed": Infinity}', "options.seed"),
    ('"keep_alive": NaN', "keep_alive"),
    ('"options": {"num_predict": 2}, "format": 5', "format"),
])
def test_ollama_rejects_lenient_types_naming_the_field(live_server, fields: str, field: str) -> None:
    response = _post(live_server, "/api/chat", ollama(fields))
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"} and response.json()["error"].startswith(f"{field}:"), response.text


def test_ints_for_floats_stay_accepted(live_server) -> None:
    openai_reply = _post(live_server, "/v1/chat/completions", chat('"max_tokens": 2, "temperature": 0, "top_p": 1'))
    assert openai_reply.status_code == 200, openai_reply.text
    options = '"options": {"num_predict": 2, "temperature": 0, "top_p": 1}'
    ollama_reply = _post(live_server, "/api/chat", ollama(options))
    assert ollama_reply.status_code == 200, ollama_reply.text
