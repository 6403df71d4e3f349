"""The middleware's audit: one durable record per request (denials included), fail closed, no secrets."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from fakes import ScriptedEngine
from garrison.api.access import authorize
from garrison.security import Security, setup
from garrison.security.principal import Limits
from garrison.settings import Settings

FAIL_AUDIT = (
    "CREATE TRIGGER audit_fails BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk full'); END"
)
# The disk fills up while a request runs: its admission is recorded, its end cannot be.
FAIL_FINISH = (
    "CREATE TRIGGER finish_fails BEFORE INSERT ON audit_log WHEN NEW.event = 'request.finished' "
    "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
)


def test_n_requests_make_n_records_including_denials(
    client: TestClient,
    chat: Callable[..., httpx.Response],
    new_key: Callable[..., str],
    security: Security,
    admin_headers: dict[str, str],
) -> None:
    good = new_key(name="alice", scopes=["chat"], models=["tiny"], limits=Limits(rpm=3))
    ollama_chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
    responses = [
        chat(good),  # allowed
        chat(None),  # 401 missing
        chat("gsk_prod_0123456789ab_" + "x" * 40),  # 401 unknown
        chat(new_key(env="dev")),  # 401 wrong environment
        chat(good, model="big"),  # 403 model
        client.post(
            "/v1/embeddings", json={"model": "tiny", "input": "x"}, headers={"Authorization": f"Bearer {good}"}
        ),  # 403
        chat(good),  # allowed
        chat(good),  # allowed (3rd of 3 rpm)
        chat(good),  # 429
        client.get("/admin/keys", headers=admin_headers),  # allowed admin
        client.get("/nope", headers=admin_headers),  # 404 after authentication
        client.post("/api/chat", json=ollama_chat, headers={"Authorization": f"Bearer {good}"}),  # 429 ndjson
    ]
    client.get("/health")  # public liveness probes are not audited (audit.exclude_paths)
    records = security.audit.query(limit=None)
    by_request: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_request.setdefault(record["request_id"], []).append(record)
    ids = [resp.headers["x-request-id"] for resp in responses]
    assert list(by_request) == ids  # every request has its records, in order, and nothing else does
    generated = {0, 6, 7}  # admitted generations: a request.admitted and a request.finished record each
    assert [[r["event"] for r in by_request[i]] for i in ids] == [
        ["request.admitted", "request.finished"] if n in generated else ["request"] for n in range(len(ids))
    ]
    final = [by_request[i][-1] for i in ids]
    assert [r["status"] for r in final] == [resp.status_code for resp in responses]
    assert [r["status"] for r in final] == [200, 401, 401, 401, 403, 403, 200, 200, 429, 200, 404, 429]
    assert [r["decision"] for r in final] == [
        "allow",
        *["deny"] * 5,
        "allow",
        "allow",
        "deny",
        "allow",
        "error",
        "deny",
    ]
    first, denied_model = final[0], final[4]
    assert (first["key_name"], first["env"], first["route"], first["model"]) == (
        "alice",
        "prod",
        "/v1/chat/completions",
        "tiny",
    )
    assert (first["prompt_tokens"], first["completion_tokens"], first["method"]) == (7, 5, "POST")
    assert first["client"] == "testclient" and first["latency_ms"] > 0 and first["reason"] is None
    assert (
        "not allowed the model 'big'" in denied_model["reason"] and denied_model["key_id"] == first["key_id"]
    )
    assert denied_model["error_code"] == "model_not_allowed"
    assert final[1]["key_id"] is None and "missing API key" in final[1]["reason"]
    assert "requests-per-minute" in final[8]["reason"] and final[8]["error_code"] == "rpm_limit_exceeded"
    assert (final[10]["reason"], final[10]["error_code"]) == ("no route GET /nope", "not_found")
    assert final[10]["key_id"] == security.guard.authenticate(admin_headers["Authorization"]).key_id
    assert security.audit.verify().ok


def test_streams_are_audited_with_their_tokens(
    client: TestClient, new_key: Callable[..., str], security: Security, engine: ScriptedEngine
) -> None:
    token = new_key()
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }
    engine.script(7, 9)
    with client.stream(
        "POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {token}"}
    ) as response:
        text = "".join(response.iter_text())
    assert response.status_code == 200
    assert text.endswith("data: [DONE]\n\n") and text.count("data: ") == 5  # role, po, ng, finish, DONE
    record = security.audit.query()[-1]
    assert (record["request_id"], record["completion_tokens"]) == (response.headers["x-request-id"], 9)
    assert (record["event"], record["prompt_tokens"], record["status"]) == ("request.finished", 7, 200)


def test_audit_failure_fails_a_response_closed(
    chat: Callable[..., httpx.Response],
    new_key: Callable[..., str],
    security: Security,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = new_key()
    security.store.execute(FAIL_AUDIT)
    response = chat(token)
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "server_error"
    assert "audit record could not be written" in error["message"]
    assert "pong" not in response.text  # the completion never left the server
    assert response.headers["x-request-id"]
    assert security.audit.count() == 0
    assert security.usage.rows() == []  # usage commits with its audit record or not at all
    assert any("audit write failed" in r.message for r in caplog.records)


def test_audit_failure_refuses_a_stream_before_any_data(
    client: TestClient, new_key: Callable[..., str], security: Security, engine: ScriptedEngine
) -> None:
    token = new_key()
    security.store.execute(FAIL_AUDIT)
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    response = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 500  # no admission record, no engine work, no data
    assert "audit record could not be written" in response.json()["error"]["message"]
    assert engine.requests == [] and security.usage.rows() == []


def test_audit_failure_ends_a_stream_with_an_error_instead_of_done(
    client: TestClient, new_key: Callable[..., str], security: Security
) -> None:
    token = new_key()
    security.store.execute(FAIL_FINISH)
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with client.stream(
        "POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {token}"}
    ) as response:
        events = [e for e in "".join(response.iter_text()).split("\n\n") if e]
    assert response.status_code == 200  # the stream had started
    assert "[DONE]" not in "".join(events)
    last = json.loads(events[-1].removeprefix("data: "))
    assert "audit record could not be written" in last["error"]["message"]
    assert [r["event"] for r in security.audit.query()] == ["request.admitted"]
    assert security.audit.unfinished() == [response.headers["x-request-id"]]
    assert security.usage.rows() == []  # usage commits with the finished record or not at all


def test_audit_failure_ends_an_ndjson_stream_with_an_error_line(
    client: TestClient, new_key: Callable[..., str], security: Security
) -> None:
    token = new_key()
    security.store.execute(FAIL_FINISH)
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
    with client.stream("POST", "/api/chat", json=body, headers={"Authorization": f"Bearer {token}"}) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert lines[0]["done"] is False
    assert not any(line.get("done") for line in lines)
    assert "audit record could not be written" in lines[-1]["error"]


def test_audit_failure_fails_a_denial_closed_too(
    chat: Callable[..., httpx.Response], security: Security
) -> None:
    security.store.execute(FAIL_AUDIT)
    response = chat(None)
    assert response.status_code == 500


def test_a_crashing_route_is_audited_as_500(security: Security, app_factory: Callable[..., FastAPI]) -> None:
    app = app_factory(security)

    @app.get("/v1/boom")
    async def boom(request: Request) -> None:
        await authorize(request, "chat")
        raise RuntimeError("engine exploded")

    assert security.bootstrap_key is not None
    with TestClient(app, raise_server_exceptions=False) as test_client:
        response = test_client.get("/v1/boom", headers={"Authorization": f"Bearer {security.bootstrap_key}"})
    assert response.status_code == 500
    assert response.json()["error"]["message"] == "internal server error"  # no traceback to the client
    record = security.audit.query()[-1]
    assert (record["status"], record["decision"], record["reason"], record["error_code"]) == (
        500,
        "error",  # it passed authorization, then failed: not "allow"
        "unhandled RuntimeError",
        "server_error",
    )
    assert record["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize("mode", ["none", "hash", "full"])
def test_content_is_stored_only_as_configured(
    tmp_path: Path, mode: str, app_factory: Callable[..., FastAPI]
) -> None:
    security = setup(Settings(home=tmp_path, audit={"content": mode}))
    try:
        assert security.bootstrap_key is not None
        with TestClient(app_factory(security)) as test_client:
            test_client.post(
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {security.bootstrap_key}"},
                json={"model": "m", "messages": [{"role": "user", "content": "ping"}]},
            )
        record = security.audit.query()[-1]
    finally:
        security.close()
    asked = '{"messages":[{"content":"ping","role":"user"}]}'  # canonical JSON: roles and boundaries kept
    expected: dict[str, tuple[Any, Any]] = {
        "none": (None, None),
        "hash": (hashlib.sha256(asked.encode()).hexdigest(), hashlib.sha256(b"pong").hexdigest()),
        "full": (asked, "pong"),
    }
    assert (record["prompt"], record["response"]) == expected[mode]
    assert record["content_mode"] == mode


def test_secrets_never_reach_store_logs_or_audit(
    tmp_path: Path, app_factory: Callable[..., FastAPI], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = Settings(home=tmp_path, audit={"content": "full"})
    security = setup(settings)
    assert security.bootstrap_key is not None
    admin = {"Authorization": f"Bearer {security.bootstrap_key}"}
    try:
        with TestClient(app_factory(security)) as test_client:
            created = test_client.post("/admin/keys", headers=admin, json={"name": "svc"}).json()
            rotated = test_client.post(
                f"/admin/keys/{created['id']}/rotate", headers=admin, json={"grace": "1m"}
            ).json()
            for token in (created["key"], rotated["key"]):
                test_client.post(
                    "/v1/chat/completions",
                    headers={"Authorization": f"Bearer {token}"},
                    json={"model": "m", "messages": [{"role": "user", "content": f"echo {token}"[:4]}]},
                )
            test_client.post(
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {created['key']}x"},
                json={"model": "m", "messages": []},
            )  # a malformed variant is denied and audited
            audit_dump = json.dumps(test_client.get("/admin/audit?limit=1000", headers=admin).json())
            keys_dump = json.dumps(test_client.get("/admin/keys", headers=admin).json())
        secrets = [security.bootstrap_key, created["key"], rotated["key"]]
        security.store.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        stored = b"".join(p.read_bytes() for p in tmp_path.glob("garrison.db*"))
    finally:
        security.close()
    logs = "\n".join(r.getMessage() for r in caplog.records)
    assert "created the first admin key" in logs  # logging was captured at all
    for secret in secrets:
        body = secret.rsplit("_", 1)[1]
        assert body.encode() not in stored
        assert body not in audit_dump and body not in keys_dump and body not in logs
