"""Eval test fixtures: a scripted OpenAI-compatible HTTP server on loopback and suite-file helpers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from eval_helpers import ScriptedOpenAI, make_case, make_handler

from garrison.evals.results import EvalRun, TargetResult


@pytest.fixture
def scripted_openai() -> Iterator[ScriptedOpenAI]:
    """A scripted OpenAI-compatible server on a free loopback port, for CLI and runner tests."""
    state = ScriptedOpenAI()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def write_suite(tmp_path: Path) -> Callable[..., Path]:
    """Write a suite document (a mapping, dumped as YAML, or raw text) and return its path."""

    def write(document: dict[str, Any] | str, name: str = "suite.yaml") -> Path:
        path = tmp_path / name
        text = document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False)
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def sample_run() -> EvalRun:
    """Two targets over four cases: 'big' passes 3 (all of 'math'), 'small' passes 1 (the 'code' one)."""
    big = TargetResult(
        "big",
        "http://big/v1",
        "big-model",
        [
            make_case("m1", True, ("math",)),
            make_case("m2", True, ("math",)),
            make_case("c1", False, ("code",), answer="<script>alert(1)</script>"),
            make_case("c2", True, ("code",)),
        ],
    )
    small = TargetResult(
        "small",
        "http://small/v1",
        "small-model",
        [
            make_case("m1", False, ("math",)),
            make_case("m2", False, ("math",)),
            make_case("c1", True, ("code",)),
            make_case("c2", False, ("code",)),
        ],
    )
    prompts = {"m1": "1+1?", "m2": "2+2?", "c1": "Write <b>code</b>", "c2": "More code"}
    return EvalRun(
        "sample",
        "A sample run.",
        "2025-01-01T00:00:00+00:00",
        {"temperature": 0.0},
        [big, small],
        prompts=prompts,
    )
