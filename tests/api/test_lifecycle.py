"""Lifecycle of `garrison serve`: SIGTERM drains in-flight streams for a bounded time, then the process exits 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from processes import free_port

MODEL = "smollm2-135m-instruct"

pytestmark = pytest.mark.model


def _serve(tmp_path: Path, drain_s: float) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    env = {**os.environ, "GARRISON_SHUTDOWN_DRAIN_S": str(drain_s), "GARRISON_HOME": str(tmp_path / "home")}
    process = subprocess.Popen(
        [sys.executable, "-m", "garrison", "serve", "--no-auth", "--port", str(port), "--threads", "2",
         "--context-length", "2048", "--no-embeddings", "--home", str(tmp_path / "home")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, process.communicate()[0][-2000:]
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "garrison serve did not start"
        time.sleep(0.1)


def _events(url: str, max_tokens: int) -> Iterator[dict]:  # type: ignore[type-arg]
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": max_tokens, "temperature": 0.0,
            "stream": True, "ignore_eos": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                data = line[6:]
                yield {"done": True} if data == "[DONE]" else json.loads(data)


def _stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    output, _ = process.communicate(timeout=120)
    return process.returncode, output


def test_sigterm_lets_an_open_stream_finish_then_exits_0(tmp_path: Path) -> None:
    process, url = _serve(tmp_path, drain_s=60)
    try:
        texts, finish, done = [], None, False
        for i, event in enumerate(_events(url, max_tokens=48)):
            if i == 0:
                process.send_signal(signal.SIGTERM)  # mid-stream
            if event.get("done"):
                done = True
            elif event.get("choices"):
                texts.append(event["choices"][0]["text"])
                finish = event["choices"][0]["finish_reason"] or finish
        assert done and finish == "length"
        code, output = _stop(process)
        assert code == 0, output[-2000:]
        assert "Traceback" not in output
    finally:
        if process.poll() is None:
            process.kill()


def test_a_stream_past_the_drain_bound_ends_with_a_clear_error_and_the_process_exits_0(tmp_path: Path) -> None:
    process, url = _serve(tmp_path, drain_s=1)
    try:
        errors, done = [], False
        for i, event in enumerate(_events(url, max_tokens=1800)):
            if i == 0:
                process.send_signal(signal.SIGTERM)
            if event.get("done"):
                done = True
            elif "error" in event:
                errors.append(event["error"])
        assert done
        assert errors and errors[0]["message"] == "the server is shutting down"
        code, output = _stop(process)
        assert code == 0, output[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
