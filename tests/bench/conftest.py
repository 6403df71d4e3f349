"""Fixtures for bench tests: the scripted streaming server in its own process, and its record of the truth."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

SERVER_SCRIPT = Path(__file__).with_name("scripted_server.py")


@pytest.fixture(scope="session")
def scripted_server() -> Iterator[str]:
    """Base URL of a scripted SSE/NDJSON server running in a separate process on 127.0.0.1."""
    process = subprocess.Popen(
        [sys.executable, str(SERVER_SCRIPT)], stdout=subprocess.PIPE, text=True, encoding="utf-8"
    )
    assert process.stdout is not None
    port = process.stdout.readline().strip()
    assert port.isdigit(), "scripted server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()


def _reset(base_url: str) -> None:
    request = urllib.request.Request(f"{base_url}/reset", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


@pytest.fixture
def reset_truth(scripted_server: str) -> Callable[[], None]:
    """Clear the server's record now, and return a function that clears it again (e.g. after a warm-up)."""
    _reset(scripted_server)
    return lambda: _reset(scripted_server)


@pytest.fixture
def truth(scripted_server: str, reset_truth: Callable[[], None]) -> Callable[[], list[dict[str, Any]]]:
    """A function reading what the server has sent since the last reset, with its own clock's times."""

    def read() -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{scripted_server}/truth", timeout=10) as response:
            return json.loads(response.read())

    return read
