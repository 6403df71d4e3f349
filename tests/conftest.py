"""Shared fixtures: one real garrison server (real model, real SQLite) on loopback per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from garrison.settings import Settings, load_settings

TEST_THREADS = int(os.environ.get("GARRISON_TEST_THREADS", str(min(2, os.cpu_count() or 1))))
MODEL = "smollm2-135m-instruct"
EMBED_MODEL = "all-minilm-l6-v2"
# A guardrail policy the live server knows besides the built-ins: PII redacted in answers only.
LIVE_OUTPUT_POLICY = {"name": "live-output", "rules": [{"what": "pii", "where": ["output"], "action": "redact"}]}


@dataclass
class LiveServer:
    url: str
    api_key: str
    settings: Settings
    app: object

    @property
    def openai_base(self) -> str:
        return f"{self.url}/v1"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@pytest.fixture(autouse=True)
def _isolated_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLI commands export GARRISON_CONFIG for their process; never let one test's leak into the next."""
    monkeypatch.setenv("GARRISON_CONFIG", "")
    monkeypatch.delenv("GARRISON_CONFIG")


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The real server with the embedded model; started once, shared by every model test."""
    from garrison.api.server import background_server, build

    home: Path = tmp_path_factory.mktemp("garrison-home")
    settings = load_settings(
        home=home, host="127.0.0.1", port=0, max_body_bytes=256 * 1024,
        engine={"threads": TEST_THREADS, "context_length": 2048, "max_queue": 32},
        auth={"enabled": True, "env": "dev"},
        guardrails={"policies": [LIVE_OUTPUT_POLICY]},  # dev has no default policy: only keys that name one
    )
    settings.ensure_home()
    app = build(settings)
    key = app.state.security.bootstrap_key if app.state.security is not None else ""
    with background_server(settings, app) as url:
        yield LiveServer(url=url, api_key=key or "", settings=settings, app=app)


@pytest.fixture(scope="session")
def postgres() -> Iterator[object]:
    """One throwaway PostgreSQL cluster for the session (tests take a fresh database each: `.database(name)`)."""
    import tempfile

    from backends import PostgresCluster

    cluster = PostgresCluster(Path(tempfile.mkdtemp(prefix="garrison-pg-"))).init()
    try:
        yield cluster
    finally:
        cluster.stop()
        import shutil

        shutil.rmtree(cluster.directory, ignore_errors=True)


@pytest.fixture
def openai_client(live_server: LiveServer):  # type: ignore[no-untyped-def]
    from openai import OpenAI

    return OpenAI(base_url=live_server.openai_base, api_key=live_server.api_key or "unused", max_retries=0,
                  timeout=120)
