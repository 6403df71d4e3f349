"""Mounting the console on the app: its state, templates, static files, error pages and security headers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from garrison import __version__
from garrison.console.auth import LoginThrottle, SignedIn
from garrison.console.conversations import ConversationStore
from garrison.console.sessions import SessionStore, derive_key
from garrison.console.web import CONSOLE_PATH, ConsoleHeaders
from garrison.security.keys import load_server_secret
from garrison.security.users import UserStore
from garrison.settings import Settings

if TYPE_CHECKING:
    from garrison.console.oidc import OidcClient
    from garrison.security import Security
    from garrison.service import InferenceService

@dataclass
class Console:
    """Everything the console's routes need, built once and kept on app.state.console."""

    settings: Settings
    security: Security
    inference: InferenceService
    users: UserStore
    sessions: SessionStore
    conversations: ConversationStore
    throttle: LoginThrottle
    oidc: OidcClient | None
    secret: bytes
    csrf_key: bytes
    templates: jinja2.Environment

    def render(self, name: str, request: Request, who: SignedIn | None, **values: Any) -> str:
        """A page from templates/, with the signed-in user, its CSRF token and the navigation."""
        return self.templates.get_template(name).render(
            who=who, csrf=who.csrf if who else values.pop("csrf", ""), path=request.url.path,
            env=self.security.env, version=__version__, oidc=self.oidc is not None, **values,
        )

    def page(self, name: str, request: Request, who: SignedIn | None, status: int = 200, **values: Any) -> HTMLResponse:
        return HTMLResponse(self.render(name, request, who, **values), status_code=status,
                            headers={"cache-control": "no-store"})


def mount_console(app: FastAPI, settings: Settings, security: Security, inference: InferenceService) -> Console:
    """Build the console's state and add its routes, static files and headers to `app`."""
    from garrison.console import admin, auth, documents, routes
    from garrison.security import secret_path

    clock = security.guard.clock
    secret = load_server_secret(secret_path(settings))
    oidc = None
    if settings.auth.oidc is not None:
        from garrison.console.oidc import OidcClient

        oidc = OidcClient(settings.auth.oidc)
    cfg = settings.console
    templates = jinja2.Environment(
        loader=jinja2.PackageLoader("garrison.console", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    console = Console(
        settings=settings,
        security=security,
        inference=inference,
        users=UserStore(security.store, clock),
        sessions=SessionStore(
            security.store, secret, idle_timeout_s=cfg.idle_timeout_s, lifetime_s=cfg.session_lifetime_s,
            clock=clock,
        ),
        conversations=ConversationStore(security.store, clock),
        throttle=LoginThrottle(cfg.login_failures_per_user, cfg.login_failures_per_client, cfg.login_window_s, clock),
        oidc=oidc,
        secret=secret,
        csrf_key=derive_key(secret, "csrf"),
        templates=templates,
    )
    app.state.console = console
    for router in (auth.router, routes.router, documents.router, admin.router):
        app.include_router(router, include_in_schema=False)
    app.mount(f"{CONSOLE_PATH}/static", StaticFiles(packages=[("garrison.console", "static")]), name="console-static")
    app.add_middleware(ConsoleHeaders)
    return console
