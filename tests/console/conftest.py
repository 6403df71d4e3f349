"""Console fixtures: an app over a scripted engine (HTTP-layer tests), and a console client that signs in."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.fakes import ScriptedEngine, service

from garrison.security.users import Grants
from garrison.settings import load_settings

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


class FakeClock:
    """A clock the test moves (session idle timeout, throttling windows)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass
class ConsoleApp:
    app: Any
    engine: ScriptedEngine
    clock: FakeClock

    @property
    def console(self) -> Any:
        return self.app.state.console

    @property
    def security(self) -> Any:
        return self.app.state.security

    def add_user(self, username: str, *, role: str = "user", clearance: str = "public",
                 scopes: tuple[str, ...] = ("chat",), models: tuple[str, ...] = ("*",),
                 collections: tuple[str, ...] = ("*",)) -> Any:
        grants = Grants(role=role, scopes=scopes, models=models, clearance=clearance, collections=collections)
        return self.console.users.create(username=username, env="dev", grants=grants, password=PASSWORD)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://test",
                                 follow_redirects=False)


@pytest.fixture
def console_app(tmp_path: Path) -> Iterator[ConsoleApp]:
    from garrison.api.app import create_app
    from garrison.security import setup

    clock = FakeClock()
    settings = load_settings(home=tmp_path, engine={"embeddings": False}, auth={"enabled": True, "env": "dev"},
                             console={"idle_timeout_s": 600})
    security = setup(settings, clock=clock)
    engine = ScriptedEngine(["Hel", "lo", "!"], prompt_tokens=7)
    inference = service({"fake": engine}, settings, context_length=512)
    app = create_app(settings, inference, security)
    try:
        yield ConsoleApp(app, engine, clock)
    finally:
        security.close()


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "the page has no CSRF token"
    return match[1]


async def sign_in(http: httpx.AsyncClient, username: str, password: str = PASSWORD) -> httpx.Response:
    page = await http.get("/console/login")
    return await http.post("/console/login", data={
        "username": username, "password": password, "csrf_token": csrf_of(page.text), "next": "/console/chat",
    })
