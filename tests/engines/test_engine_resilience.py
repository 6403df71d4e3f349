"""The decode loop never dies silently: a failed step fails its requests and the loop goes on; a context that
cannot be reset makes /health answer 503 and /metrics show it, until it recovers. Against the real engine."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from garrison.engines.kvcache import SlotTable

MODEL = "smollm2-135m-instruct"

pytestmark = pytest.mark.model


def engine_of(live_server: Any) -> Any:
    return live_server.app.state.inference.engine(MODEL)


def wait_for(predicate: Callable[[], bool], what: str, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, f"never reached: {what}"
        time.sleep(0.05)


def complete(live_server: Any, prompt: str = "Say hello.") -> httpx.Response:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 8, "temperature": 0.0}
    return httpx.post(f"{live_server.openai_base}/completions", json=body, headers=live_server.headers,
                      timeout=120)


def scrape(live_server: Any, name: str) -> float:
    text = httpx.get(f"{live_server.url}/metrics", headers=live_server.headers, timeout=30).text
    for line in text.splitlines():
        if line.startswith(f'{name}{{model="{MODEL}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_step_that_raises_fails_its_request_with_500_and_the_loop_serves_on(live_server, monkeypatch) -> None:
    engine = engine_of(live_server)
    scheduler = engine._scheduler
    real = scheduler._flush
    calls = {"n": 0}

    def flush_failing_once() -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected failure in _flush")
        real()

    restarts = engine.metrics()["loop_restarts_total"]
    monkeypatch.setattr(scheduler, "_flush", flush_failing_once)
    failed = complete(live_server)
    assert failed.status_code == 500
    assert "engine failed while generating" in failed.json()["error"]["message"]
    assert engine.metrics()["loop_restarts_total"] == restarts + 1
    ok = complete(live_server)  # the same decode thread serves the next request
    assert ok.status_code == 200, ok.text
    assert ok.json()["usage"]["completion_tokens"] > 0
    assert httpx.get(f"{live_server.url}/health", timeout=30).status_code == 200


def test_a_context_that_cannot_reset_makes_health_503_until_it_recovers(live_server, monkeypatch) -> None:
    engine = engine_of(live_server)
    scheduler = engine._scheduler
    broken = {"on": True}
    real_reset = SlotTable.reset

    def step_failing() -> None:
        raise RuntimeError("injected step failure")

    def reset(self: SlotTable) -> None:
        if broken["on"]:
            raise RuntimeError("injected reset failure")
        real_reset(self)

    real_step = scheduler.step
    monkeypatch.setattr(scheduler, "step", step_failing)
    monkeypatch.setattr(SlotTable, "reset", reset)
    failed = complete(live_server)
    assert failed.status_code == 500
    health = httpx.get(f"{live_server.url}/health", timeout=30)
    assert health.status_code == 503
    assert "cannot reset the llama.cpp context" in health.json()["reason"]
    assert scrape(live_server, "garrison_engine_healthy") == 0
    refused = complete(live_server)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "engine_unavailable"

    broken["on"] = False  # the fault goes away: the loop's retry brings the engine back
    monkeypatch.setattr(scheduler, "step", real_step)
    engine._loop.wake()
    wait_for(lambda: httpx.get(f"{live_server.url}/health", timeout=30).status_code == 200, "healthy again")
    assert scrape(live_server, "garrison_engine_healthy") == 1
    assert complete(live_server).status_code == 200
