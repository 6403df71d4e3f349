"""Holes of issue 13 reproduced on the real server (real model, real SQLite), each closed.

Budgets and charges are read back from the store the server writes; nothing here is timed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.model

MODEL = "smollm2-135m-instruct"
# Byte-level BPE spends about three tokens on each of these characters; the 3-characters-a-token
# estimate counts one per three: a prompt of them is nine times denser than estimated.
DENSE = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(150))


def _key(live_server: Any, **fields: Any) -> tuple[str, str]:
    response = httpx.post(f"{live_server.url}/admin/keys", headers=live_server.headers, timeout=30,
                          json={"name": "holes", "scopes": ["chat", "completions"], **fields})
    assert response.status_code == 201, response.text
    return response.json()["id"], response.json()["key"]


def _records(live_server: Any, request_id: str) -> list[dict[str, Any]]:
    return [r for r in live_server.app.state.security.audit.query(limit=None) if r["request_id"] == request_id]


def _charged(live_server: Any, key_id: str) -> int:
    return sum(row.total_tokens for row in live_server.app.state.security.usage.rows(key_id=key_id))


def _wait_for(predicate: Callable[[], bool], what: str, limit_s: float = 60.0) -> None:
    """Poll the store until the server has written what it writes after the response is gone."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, f"the server never recorded: {what}"
        time.sleep(0.05)


def test_a_daily_budget_holds_against_concurrent_token_dense_requests(live_server: Any) -> None:
    key_id, key = _key(live_server, daily_tokens=300)
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": MODEL, "messages": [{"role": "user", "content": DENSE}], "max_tokens": 16,
            "temperature": 0}

    async def three() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live_server.openai_base, headers=headers, timeout=120) as client:
            return list(await asyncio.gather(*[client.post("/chat/completions", json=body) for _ in range(3)]))

    responses = asyncio.run(three())
    for response in responses:
        assert response.status_code in (200, 429), response.text
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "daily_budget_exceeded"
    assert _charged(live_server, key_id) <= 300  # was 2,262 before the fix
    finished = [r for r in live_server.app.state.security.audit.query(key_id=key_id, limit=None)]
    assert sum(r["prompt_tokens"] + r["completion_tokens"] for r in finished) <= 300


def test_a_remaining_budget_caps_a_request_without_max_tokens(live_server: Any) -> None:
    key_id, key = _key(live_server, daily_tokens=120)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Count upwards from one."}],
            "temperature": 0, "ignore_eos": True}
    response = httpx.post(f"{live_server.openai_base}/chat/completions", json=body, timeout=120,
                          headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    assert response.json()["choices"][0]["finish_reason"] == "length"
    assert 0 < usage["total_tokens"] <= 120 and _charged(live_server, key_id) == usage["total_tokens"]
    again = httpx.post(f"{live_server.openai_base}/chat/completions", json=body, timeout=120,
                       headers={"Authorization": f"Bearer {key}"})
    assert again.status_code == 429 and again.json()["error"]["code"] == "daily_budget_exceeded"


def test_an_abandoned_stream_is_charged_and_audited_with_its_tokens(live_server: Any) -> None:
    key_id, key = _key(live_server)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a very long story."}],
            "max_tokens": 1500, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", f"{live_server.openai_base}/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {key}"}) as response:
        request_id = response.headers["x-request-id"]
        lines = response.iter_lines()
        received = [next(lines) for _ in range(12)]
    assert sum(line.startswith("data: ") for line in received) >= 5
    _wait_for(lambda: len(_records(live_server, request_id)) == 2, "the abandoned stream's end")
    admitted, finished = _records(live_server, request_id)
    assert (admitted["event"], finished["event"]) == ("request.admitted", "request.finished")
    assert finished["prompt_tokens"] > 0 and finished["completion_tokens"] >= 4  # was (0, 0), free
    assert "went away" in finished["reason"]
    assert _charged(live_server, key_id) == finished["prompt_tokens"] + finished["completion_tokens"]


def test_a_request_is_durably_recorded_when_admitted_before_it_ends(live_server: Any) -> None:
    """What a crash mid-stream leaves: the admitted record is committed while the stream still runs."""
    from garrison.security import connect

    settings = live_server.settings
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a very long story."}],
            "max_tokens": 1900, "stream": True, "ignore_eos": True}
    _, key = _key(live_server)
    elsewhere = connect(settings)  # another process's view of the store: what survives if this server dies
    try:
        with httpx.stream("POST", f"{live_server.openai_base}/chat/completions", json=body, timeout=60,
                          headers={"Authorization": f"Bearer {key}"}) as response:
            request_id = response.headers["x-request-id"]
            # As soon as the answer has begun (headers sent, nothing read yet) the admission is on disk.
            unfinished = elsewhere.audit.unfinished()
            rows = elsewhere.store.fetchall("SELECT event, status FROM audit_log WHERE request_id = ?",
                                            (request_id,))
            first = next(response.iter_lines())
            assert response.status_code == 200, first
            verdict = elsewhere.audit.verify()
    finally:
        elsewhere.close()
    assert request_id in unfinished, (first, [tuple(row) for row in rows])
    assert [tuple(row) for row in rows] == [("request.admitted", 102)]
    assert verdict.ok
    if request_id in verdict.unfinished:  # still running when the whole chain was verified
        assert "admitted but never finished" in verdict.describe()


def test_a_body_that_fails_to_parse_is_recorded_as_what_happened_and_by_whom(live_server: Any) -> None:
    key_id, key = _key(live_server)
    response = httpx.post(f"{live_server.openai_base}/chat/completions", content=b"{not json", timeout=30,
                          headers={"Authorization": f"Bearer {key}", "content-type": "application/json"})
    assert response.status_code == 400
    (record,) = _records(live_server, response.headers["x-request-id"])
    assert (record["status"], record["decision"], record["key_id"]) == (400, "error", key_id)  # was "allow"
    assert record["error_code"] == "invalid_request_error" and "not valid JSON" in record["reason"]


def test_a_client_chosen_request_id_never_becomes_the_audit_id(live_server: Any) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    ids = []
    for _ in range(2):
        response = httpx.post(f"{live_server.openai_base}/chat/completions", json=body, timeout=60,
                              headers={**live_server.headers, "x-request-id": "client-chosen-1"})
        assert response.status_code == 200
        ids.append(response.headers["x-request-id"])
    assert "client-chosen-1" not in ids and len(set(ids)) == 2
    for request_id in ids:
        records = _records(live_server, request_id)
        assert len(records) == 2 and all(r["client_request_id"] == "client-chosen-1" for r in records)
    assert _records(live_server, "client-chosen-1") == []
