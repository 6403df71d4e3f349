"""Client gone means work stops: a client that disconnects while queued, during prefill, or during a
non-streamed generation frees its place in the engine. Through the real server, real engine, raw sockets."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

MODEL = "smollm2-135m-instruct"

pytestmark = pytest.mark.model


def engine_of(live_server: Any) -> Any:
    return live_server.app.state.inference.engine(MODEL)


def wait_for(predicate: Callable[[], bool], what: str, limit_s: float = 120.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, f"engine never reached: {what}"
        time.sleep(0.02)


def send_raw(live_server: Any, body: dict[str, Any]) -> socket.socket:
    """POST a completion on a raw socket and return it unread: closing it is the client going away."""
    url = urlsplit(live_server.url)
    data = json.dumps(body).encode()
    sock = socket.create_connection((url.hostname, url.port))
    sock.sendall(
        f"POST /v1/completions HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {live_server.api_key}\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data
    )
    return sock


def long_body(max_tokens: int, prompt: str = "Tell me a long story about a lighthouse.", **extra: Any) -> dict:  # type: ignore[type-arg]
    return {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True,
            **extra}


def test_disconnect_during_a_non_streamed_generation_stops_it(live_server) -> None:
    engine = engine_of(live_server)
    before = engine.metrics()
    sock = send_raw(live_server, long_body(1500))
    wait_for(lambda: engine.metrics()["tokens_generated_total"] > before["tokens_generated_total"] + 4,
             "the completion generating")
    sock.close()
    wait_for(lambda: engine.metrics()["running"] == 0, "its slot freed")
    generated = engine.metrics()["tokens_generated_total"] - before["tokens_generated_total"]
    assert generated < 1500  # it stopped long before its budget


def test_disconnect_during_prefill_stops_it(live_server) -> None:
    engine = engine_of(live_server)
    prompt = " ".join(f"Line {i}: the keeper wrote down the wind and the ships." for i in range(110))
    n_prompt = len(engine.tokenize(prompt, add_bos=True))
    assert 1000 < n_prompt < 2000  # long enough to prefill over many steps, short enough for the context
    before = engine.metrics()
    sock = send_raw(live_server, long_body(8, prompt=prompt))
    wait_for(lambda: engine.metrics()["tokens_prefilled_total"] > before["tokens_prefilled_total"],
             "the prompt prefilling")
    sock.close()
    wait_for(lambda: engine.metrics()["running"] == 0, "its slot freed")
    after = engine.metrics()
    assert after["tokens_generated_total"] == before["tokens_generated_total"]  # never got to its first token
    assert after["tokens_prefilled_total"] - before["tokens_prefilled_total"] < n_prompt  # prefill stopped early


def test_disconnect_while_queued_leaves_the_queue_and_never_takes_a_slot(live_server) -> None:
    engine = engine_of(live_server)
    slots = engine.metrics()["slots"]
    stop = threading.Event()
    streams: list[httpx.Response] = []

    def hold_a_slot() -> None:  # a streaming client that keeps its slot busy until told to leave
        with httpx.stream("POST", f"{live_server.openai_base}/completions", headers=live_server.headers,
                          json=long_body(1500, stream=True), timeout=300) as response:
            streams.append(response)
            for _ in response.iter_lines():
                if stop.is_set():
                    return

    holders = [threading.Thread(target=hold_a_slot) for _ in range(slots)]
    for thread in holders:
        thread.start()
    try:
        wait_for(lambda: engine.metrics()["running"] == slots, "every slot busy")
        admitted = engine.metrics()["requests_total"]
        sock = send_raw(live_server, long_body(8))
        wait_for(lambda: engine.metrics()["waiting"] == 1, "one request queued")
        sock.close()
        wait_for(lambda: engine.metrics()["waiting"] == 0, "the queued request gone")
        assert engine.metrics()["requests_total"] == admitted  # it never took a slot
        assert live_server.app.state.inference.load_state()[MODEL]["in_flight"] == slots
    finally:
        stop.set()
        for thread in holders:
            thread.join(timeout=120)
    wait_for(lambda: engine.metrics()["running"] == 0, "the holders' slots freed")
