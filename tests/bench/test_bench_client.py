"""The streaming client: what it sends, how it reads SSE and NDJSON, and how failures are counted."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import pytest

from garrison.bench.client import OllamaBackend, OpenAIBackend
from garrison.bench.config import BenchConfig
from garrison.bench.load import SweepState
from garrison.bench.prompts import Prompt
from garrison.bench.run import measure

FAST = "ttft=5,itl=1,tokens=4"


def run(url: str, model: str = FAST, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {"concurrency": (2,), "requests": 4, "warmup": 0, "output_tokens": 4}
    settings.update(overrides)
    return asyncio.run(measure(BenchConfig(url=url, model=model, **settings)))


def summary(results: dict[str, Any]) -> dict[str, Any]:
    return results["levels"][0]["summary"]


def test_openai_endpoint_and_payload() -> None:
    backend = OpenAIBackend()
    assert backend.endpoint("http://h:1") == "http://h:1/v1/chat/completions"
    assert backend.endpoint("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    assert backend.endpoint("http://h:1/v1/chat/completions") == "http://h:1/v1/chat/completions"
    prompt = Prompt([{"role": "user", "content": "hi"}], max_tokens=7, estimated_input_tokens=1)
    body = backend.payload(BenchConfig(url="http://h:1", model="m"), prompt)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (body["max_tokens"], body["min_tokens"], body["ignore_eos"]) == (7, 7, True)
    plain = backend.payload(BenchConfig(url="http://h:1", model="m", ignore_eos=False), prompt)
    assert "ignore_eos" not in plain and "min_tokens" not in plain


def test_openai_parse_lines() -> None:
    parse = OpenAIBackend().parse
    content = parse(b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}')
    assert content is not None and content.content
    role_only = parse(b'data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}')
    assert role_only is not None and not role_only.content
    usage = parse(b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":9}}')
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (3, 9)
    done = parse(b"data: [DONE]")
    assert done is not None and done.done
    error = parse(b'data: {"error":{"message":"boom","type":"server_error"}}')
    assert error is not None and error.error == "boom"
    assert parse(b": keep-alive") is None and parse(b"event: message") is None


def test_ollama_endpoint_payload_and_parse() -> None:
    backend = OllamaBackend()
    assert backend.endpoint("http://h:11434") == "http://h:11434/api/chat"
    prompt = Prompt([{"role": "user", "content": "hi"}], max_tokens=7, estimated_input_tokens=1)
    body = backend.payload(BenchConfig(url="http://h:1", model="m"), prompt)
    assert body["options"]["num_predict"] == 7 and "ignore_eos" not in body
    chunk = backend.parse(b'{"message":{"role":"assistant","content":"Hi"},"done":false}')
    assert chunk is not None and chunk.content and not chunk.done
    last = backend.parse(b'{"message":{"content":""},"done":true,"eval_count":12,"prompt_eval_count":5}')
    assert last is not None and last.done and (last.completion_tokens, last.prompt_tokens) == (12, 5)
    failure = backend.parse(b'{"error":"model not found"}')
    assert failure is not None and failure.error == "model not found"


def test_openai_run_sends_key_usage_request_and_eos_control(
    scripted_server: str, truth: Callable[[], list[dict[str, Any]]]
) -> None:
    s = summary(run(scripted_server, api_key="k-123", output_tokens=6))
    assert s["completed"] == 4 and s["error_rate"] == 0.0
    assert s["output_tokens_source"] == "usage" and s["input_tokens_source"] == "usage"
    assert s["output_tokens"]["mean"] == 4
    sent = truth()
    assert len(sent) == 4
    assert {r["authorization"] for r in sent} == {"Bearer k-123"}
    body = sent[0]["body"]
    assert body["ignore_eos"] is True and body["min_tokens"] == body["max_tokens"] == 6
    assert body["stream_options"] == {"include_usage": True}


def test_without_usage_tokens_are_counted_from_chunks(scripted_server: str) -> None:
    s = summary(run(scripted_server, model=FAST + ",tokens=5,usage=0"))
    assert s["output_tokens_source"] == "chunks" and s["input_tokens_source"] == "estimate"
    assert s["output_tokens"]["mean"] == 5


def test_tokens_per_chunk_from_usage(scripted_server: str) -> None:
    s = summary(run(scripted_server, model=FAST + ",per_chunk=3"))
    assert s["tokens_per_chunk"]["mean"] == 3.0
    assert s["output_tokens"]["mean"] == 12


def test_ollama_backend(scripted_server: str, truth: Callable[[], list[dict[str, Any]]]) -> None:
    s = summary(run(scripted_server, backend="ollama", output_tokens=5))
    assert s["completed"] == 4 and s["output_tokens_source"] == "usage"
    sent = truth()
    assert {r["path"] for r in sent} == {"/api/chat"}
    assert sent[0]["body"]["options"]["num_predict"] == 5


@pytest.mark.parametrize(
    ("script", "kind"),
    [("status=503", "http_503"), ("fail_after=2", "stream_error"), ("drop_after=2", "disconnected")],
)
def test_failures_are_counted_by_kind_never_raised(scripted_server: str, script: str, kind: str) -> None:
    results = run(scripted_server, model=f"{FAST},{script}")
    s = summary(results)
    assert s["errors"] == {kind: 4}
    assert (s["completed"], s["error_rate"]) == (0, 1.0)
    assert all(not r["ok"] and r["error"] == kind for r in results["levels"][0]["requests"])


def test_timeouts_are_counted(scripted_server: str) -> None:
    s = summary(run(scripted_server, model="ttft=3000,tokens=2", timeout_s=0.3, requests=2))
    assert s["errors"] == {"timeout": 2}


def test_refused_connections_are_counted() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    s = summary(run(f"http://127.0.0.1:{port}", requests=3))
    assert s["errors"] == {"connect": 3}


def test_open_loop_rate_level(scripted_server: str) -> None:
    results = run(scripted_server, concurrency=(), rates=(40.0,), requests=6)
    level = results["levels"][0]
    assert level["mode"] == "rate" and level["rate"] == 40.0 and "concurrency" not in level
    assert level["summary"]["completed"] == 6
    scheduled = [r["scheduled_s"] for r in level["requests"]]
    assert scheduled == sorted(scheduled) and len(set(scheduled)) == 6


def test_duration_stops_sending_at_the_deadline(scripted_server: str) -> None:
    config = BenchConfig(
        url=scripted_server, model=FAST, concurrency=(2,), requests=None, duration_s=0.3, warmup=0
    )
    state = SweepState(config)
    asyncio.run(measure(config, state=state))
    level = state.levels[0]
    assert len(level.records) >= 2
    assert all(r.scheduled_at <= level.started_at + 0.3 for r in level.records)


def test_warmup_requests_are_not_counted(
    scripted_server: str, truth: Callable[[], list[dict[str, Any]]]
) -> None:
    s = summary(run(scripted_server, warmup=3, requests=2))
    assert s["completed"] == 2
    assert len(truth()) == 5


def test_requests_on_kept_alive_connections_the_server_closed_are_resent(scripted_server, truth) -> None:
    """A server that closes idle keep-alive connections (llama-server) loses no request: each one whose
    reused connection turns out closed, before any response byte, goes again on a fresh connection."""
    results = run(scripted_server, model=f"{FAST},stale=1", concurrency=(1,), requests=6)
    level = summary(results)
    assert level["completed"] == 6, level
    assert level.get("errors", {}) == {}
    sent = truth()
    dropped = [r for r in sent if r.get("dropped")]
    answered = [r for r in sent if not r.get("dropped")]
    assert len(answered) == 6
    assert dropped  # the script really closed reused connections: the resend is what saved those requests


def test_a_server_that_drops_a_fresh_connection_still_counts_as_a_failure(scripted_server) -> None:
    """Only stale kept-alive connections are retried: a server that cuts a stream is the server's failure."""
    results = run(scripted_server, model="ttft=5,itl=1,tokens=4,drop_after=0", concurrency=(1,), requests=2)
    assert summary(results)["completed"] == 0
