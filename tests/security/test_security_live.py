"""Access control and audit through the real server: real model, real SQLite, the openai SDK."""

from __future__ import annotations

import httpx
import openai
import pytest

pytestmark = pytest.mark.model

MODEL = "smollm2-135m-instruct"
EMBED_MODEL = "all-minilm-l6-v2"


def _new_key(live_server, **fields) -> str:
    response = httpx.post(f"{live_server.url}/admin/keys", headers=live_server.headers, timeout=30,
                          json={"name": "live-test", **fields})
    assert response.status_code == 201, response.text
    return response.json()["key"]


def _client(live_server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server.openai_base, api_key=key, max_retries=0, timeout=120)


def test_every_route_but_health_needs_a_key(live_server) -> None:
    assert httpx.get(f"{live_server.url}/health").status_code == 200
    for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("POST", "/v1/embeddings"),
                         ("GET", "/admin/keys"), ("GET", "/api/tags")):
        response = httpx.request(method, f"{live_server.url}{path}", json={}, timeout=30)
        assert response.status_code == 401, path
        assert "x-request-id" in response.headers


def test_scoped_key_gets_403_before_any_engine_work(live_server) -> None:
    key = _new_key(live_server, scopes=["embeddings"], models=[EMBED_MODEL])
    client = _client(live_server, key)
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    vectors = client.embeddings.create(model=EMBED_MODEL, input="allowed")
    assert len(vectors.data[0].embedding) == 384


def test_a_key_lists_only_the_models_it_may_use(live_server) -> None:
    key = _new_key(live_server, scopes=["embeddings"], models=[EMBED_MODEL])
    headers = {"Authorization": f"Bearer {key}"}
    assert [m.id for m in _client(live_server, key).models.list()] == [EMBED_MODEL]
    tags = httpx.get(f"{live_server.url}/api/tags", headers=headers, timeout=30).json()
    assert [m["name"].split(":")[0] for m in tags["models"]] == [EMBED_MODEL]
    assert httpx.get(f"{live_server.url}/v1/models/{MODEL}", headers=headers, timeout=30).status_code == 403
    admin = {m.id for m in _client(live_server, live_server.api_key).models.list()}
    assert {MODEL, EMBED_MODEL} <= admin


def test_revoked_key_is_401(live_server) -> None:
    created = httpx.post(f"{live_server.url}/admin/keys", headers=live_server.headers, timeout=30,
                         json={"name": "to-revoke", "scopes": ["chat"], "models": ["*"]}).json()
    client = _client(live_server, created["key"])
    assert client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                          max_tokens=2).choices
    revoked = httpx.post(f"{live_server.url}/admin/keys/{created['id']}/revoke", headers=live_server.headers)
    assert revoked.status_code == 200
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)


def test_each_request_allowed_or_denied_leaves_its_chained_records(live_server) -> None:
    audit = live_server.app.state.security.audit
    before = audit.count()
    last_seq = max((r["seq"] for r in audit.query(limit=None)), default=0)
    good = _client(live_server, live_server.api_key)
    answer = good.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    chunks = list(good.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                               max_tokens=3, stream=True, stream_options={"include_usage": True}))
    streamed = chunks[-1].usage
    assert answer.usage is not None and streamed is not None
    # Sampled answers may end before max_tokens; the record holds what the client was told it used.
    assert 1 <= answer.usage.completion_tokens <= 3 and 1 <= streamed.completion_tokens <= 3
    with pytest.raises(openai.AuthenticationError):
        _client(live_server, "gsk_dev_not-a-real-key").models.list()
    with pytest.raises(openai.NotFoundError):
        good.chat.completions.create(model="missing", messages=[{"role": "user", "content": "hi"}])
    assert audit.count() == before + 6  # two generations: admitted + finished each; two single records
    records = audit.query(after_seq=last_seq, limit=None)
    assert [r["event"] for r in records] == [
        "request.admitted", "request.finished", "request.admitted", "request.finished", "request", "request"]
    final = [records[1], records[3], records[4], records[5]]
    assert [r["status"] for r in final] == [200, 200, 401, 404]
    assert [r["decision"] for r in final] == ["allow", "allow", "deny", "error"]
    assert final[0]["completion_tokens"] == answer.usage.completion_tokens
    assert final[1]["completion_tokens"] == streamed.completion_tokens
    assert final[3]["error_code"] == "model_not_found" and final[3]["model"] == "missing"
    assert audit.verify().ok and audit.unfinished() == []
