"""How console routes answer: security headers on every response, errors as pages, sign-in redirects."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from garrison.api.context import get_context
from garrison.errors import GarrisonError

CONSOLE_PATH = "/console"
# default-src 'self' covers scripts, styles, images, fonts and fetches; the rest closes what it does not.
CSP = "default-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'; object-src 'none'"
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]



class SignInRequired(GarrisonError):
    """No live session: pages redirect to the sign-in page, streams answer 401."""

    status = 401
    type = "authentication_error"
    code = "sign_in_required"


class ConsoleRoute(APIRoute):
    """Console routes answer errors as pages: sign-in redirects for pages, the error page otherwise."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except GarrisonError as exc:
                response = error_page(request, exc)
            ctx = get_context(request)
            if ctx.reason is None:  # what the audit record says of a plain page view
                ctx.reason = "console session" if ctx.principal is not None else "console, signed out"
            return response

        return route


def error_page(request: Request, exc: GarrisonError) -> Response:
    """A console error: stream clients get JSON, anonymous page views the sign-in page, others a page."""
    ctx = get_context(request)
    if exc.status in (401, 403) and ctx.decision != "deny":
        ctx.deny(exc.message)
    if request.headers.get("accept", "").startswith("text/event-stream"):
        return JSONResponse({"error": {"message": exc.message, "code": exc.code}}, status_code=exc.status)
    if isinstance(exc, SignInRequired):
        if request.method == "GET":
            return sign_in_redirect(request)
        return RedirectResponse(f"{CONSOLE_PATH}/login", status_code=303)
    console = request.app.state.console
    return console.page("error.html", request, None, status=exc.status, message=exc.message, status_code=exc.status)


class ConsoleHeaders:
    """Security headers on every /console response (pages, streams and static files alike)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(CONSOLE_PATH):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in dict(_HEADERS)]
                message = {**message, "headers": [*kept, *_HEADERS]}
            await send(message)

        await self.app(scope, receive, with_headers)



def sign_in_redirect(request: Request) -> RedirectResponse:
    """Where an anonymous page view goes: the sign-in page, coming back here afterwards."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{CONSOLE_PATH}/login?next={quote(target, safe='/')}", status_code=303)
