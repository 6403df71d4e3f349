"""HTTP side of access control: `authorize` for listing routes; the middleware that ids, guards and audits.

Generations and embeddings are authorized, admitted and audited by the pipeline (garrison.pipeline); this
middleware writes the one audit record of every other request (listings, admin calls, denials at the door,
bodies that failed to parse), saying what happened.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import anyio
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from garrison.api.context import RequestContext, get_context
from garrison.api.errors import error_body, error_headers
from garrison.audit.log import AuditEvent, AuditLog
from garrison.errors import AuditWriteError, GarrisonError, StoreUnavailable, Unauthenticated
from garrison.pipeline.ledger import decision_for
from garrison.registry import ModelInfo
from garrison.security import Security
from garrison.security.principal import Principal

log = logging.getLogger("garrison.audit")
T = TypeVar("T")

_CONSOLE, _CONSOLE_STATIC = "/console", "/console/static/"  # console routes check their own session cookie
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_STREAMING_TYPES = (b"text/event-stream", b"application/x-ndjson")


async def authorize(request: Request, scope: str | None, model: str | None = None) -> Principal | None:
    """Authenticate and authorize a request that runs no generation (listings, admin); None when auth is off.

    `scope` is chat|completions|embeddings|admin (None: any valid key); the request counts against the
    key's requests-per-minute. On denial the garrison error (401/403/429) propagates to the surface's
    error handler, which notes it for the audit record.
    """
    ctx = get_context(request)
    if model is not None:
        ctx.model = model
    security: Security | None = getattr(request.app.state, "security", None)
    if security is None or not security.auth_enabled:
        return None
    guard = security.guard
    principal = ctx.principal or await off_loop(request.app, security, guard.authenticate,
                                                request.headers.get("authorization"))
    ctx.principal = principal
    guard.authorize(principal, scope, model)
    await off_loop(request.app, security, guard.admit, principal)
    ctx.authorized = True
    return principal


async def off_loop(app: Any, security: Security, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)`, a key check or quota admission: inline on the embedded SQLite store (a local read of
    microseconds, less than a thread hop costs); in the pipeline's store threads when it may wait on a server
    (`security.networked`), so one round trip, or an unreachable database's connect timeout, never stalls
    the event loop and every other request (and /health) with it."""
    if not security.networked:
        return fn(*args)
    inference = getattr(getattr(app, "state", None), "inference", None)
    if inference is None:  # an app without the pipeline (unit tests)
        return await anyio.to_thread.run_sync(fn, *args)
    result: T = await inference.offload.run(fn, *args)
    return result


async def visible_models(request: Request, models: Iterable[ModelInfo]) -> list[ModelInfo]:
    """Authenticate a model listing (any valid key) and keep the models that key may use (all without auth)."""
    principal = await authorize(request, None)
    return [m for m in models if principal is None or principal.allows_model(m.id)]


class RequestContextMiddleware:
    """Pure ASGI middleware: request id, authentication of every non-public path, and a durable audit record.

    Non-streaming responses are buffered and released only after their audit record is committed (one the
    pipeline recorded itself is released at once); if the write fails the client gets a 500: the request
    fails closed. Streams come only from the pipeline, which commits their record before their final
    frame, so they flow through. With `app.state.security` None it only adds ids.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = _new_context(scope)
        scope.setdefault("state", {})["ctx"] = ctx
        security: Security | None = getattr(getattr(scope.get("app"), "state", None), "security", None)
        path = scope["path"]
        audit = None
        if security is not None and path not in security.audit_exclude_paths and not path.startswith(_CONSOLE_STATIC):
            audit = security.audit
        exchange = _Exchange(ctx, security, audit, send, path)
        bearer = not (path == _CONSOLE or path.startswith(_CONSOLE + "/"))  # the console signs in by session
        if security is not None and security.auth_enabled and bearer and path not in security.public_paths:
            try:  # deny by default: no route runs for an unauthenticated caller, known path or not
                ctx.principal = await off_loop(
                    scope.get("app"), security, security.guard.authenticate, _header(scope, b"authorization")
                )
            except Unauthenticated as exc:
                ctx.deny(exc.message)
                ctx.note(exc)
                await exchange.respond_error(exc)
                return
            except StoreUnavailable as exc:  # a shared store's outage, and this key is not in the grace cache
                ctx.note(exc)
                await exchange.respond_error(exc)
                return
        try:
            await self.app(scope, receive, exchange.send)
        except BaseException as exc:
            await exchange.abort(exc)
            raise
        await exchange.finish()


class _Exchange:
    """One response on its way out: holds what must wait for the audit record, then sends or replaces it."""

    def __init__(
        self, ctx: RequestContext, security: Security | None, audit: AuditLog | None, send: Send, path: str
    ) -> None:
        self.ctx, self.security, self.audit, self.path = ctx, security, audit, path
        self._send = send
        self.start: Message | None = None  # a buffered (non-streaming) response start
        self.body: list[bytes] = []
        self.streaming = False  # passed straight through
        self.started = False  # something went to the client
        self.ended = False
        self.audited: bool | None = None  # None: not yet; True/False: the write's outcome

    async def send(self, message: Message) -> None:
        """The `send` the app sees."""
        kind = message["type"]
        if kind == "http.response.start":
            message = {
                **message,
                "headers": _with_request_id(message.get("headers", []), self.ctx.request_id),
            }
            self.ctx.status = message["status"]
            content_type = _content_type(message["headers"])
            if self.audit is None or content_type.startswith(_STREAMING_TYPES) or self.ctx.audited_by_pipeline:
                self.streaming = True
                await self._forward(message)
            else:
                self.start = message
            return
        if kind != "http.response.body":
            await self._forward(message)
            return
        if self.streaming:
            self.ended = not message.get("more_body", False)
            await self._forward(message)
            return
        self.body.append(message.get("body", b""))
        if not message.get("more_body", False):
            await self._release()

    async def respond_error(self, exc: GarrisonError) -> None:
        """Answer with an error of our own (an authentication failure), audited like any response."""
        headers = {"content-type": "application/json", **error_headers(exc)}
        if isinstance(exc, Unauthenticated):
            headers["www-authenticate"] = 'Bearer realm="garrison"'
        raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        await self.send({"type": "http.response.start", "status": exc.status, "headers": raw})
        await self.send(
            {"type": "http.response.body", "body": _json_error(self.path, exc), "more_body": False}
        )

    async def finish(self) -> None:
        """The app returned: audit what has not been audited and release anything still held."""
        if self.ctx.status is None:
            self.ctx.status = 500
            self.ctx.reason = self.ctx.reason or "the application sent no response"
        elif self.streaming and not self.ended:
            self.ctx.reason = self.ctx.reason or "the response ended early (client disconnected?)"
        if self.start is not None and not self.started:
            await self._release()
        else:
            await self._write_audit()

    async def abort(self, exc: BaseException) -> None:
        """The app raised (the caller re-raises): if nothing went out, send an audited 500 with our id."""
        self.ctx.reason = self.ctx.reason or f"unhandled {type(exc).__name__}"
        if isinstance(exc, Exception):
            self.ctx.error_code = self.ctx.error_code or "server_error"
        with anyio.CancelScope(shield=True):  # a cancelled request still gets its record
            if self.started or not isinstance(exc, Exception):
                self.ctx.status = self.ctx.status if self.started else 500
                await self._write_audit()
                return
            self.start, self.body, self.streaming = None, [], False
            await self.respond_error(GarrisonError("internal server error"))

    async def _release(self) -> None:
        """Send the buffered response once its audit record is durable, else a 500 error in its place."""
        assert self.start is not None
        if await self._write_audit():
            await self._forward(self.start)
            await self._forward(
                {"type": "http.response.body", "body": b"".join(self.body), "more_body": False}
            )
            return
        error = AuditWriteError("the request failed closed: its audit record could not be written")
        body = _json_error(self.path, error)
        await self._forward(
            {
                "type": "http.response.start",
                "status": error.status,
                "headers": _with_request_id(
                    [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                    self.ctx.request_id,
                ),
            }
        )
        await self._forward({"type": "http.response.body", "body": body, "more_body": False})

    async def _forward(self, message: Message) -> None:
        self.started = True
        await self._send(message)

    async def _write_audit(self) -> bool:
        """Commit this request's record (once, unless the pipeline recorded it); False when not durable."""
        if self.audited is not None:
            return self.audited
        self.audited = True
        if self.audit is None or self.ctx.audited_by_pipeline:
            return True
        try:
            await anyio.to_thread.run_sync(self.audit.append, _event(self.ctx, self.security, self.path))
        except Exception as exc:  # any failure to record fails the request closed
            log.error("audit write failed for request %s: %s", self.ctx.request_id, exc)
            self.audited = False
        return self.audited


def _event(ctx: RequestContext, security: Security | None, path: str) -> AuditEvent:
    principal = ctx.principal if isinstance(ctx.principal, Principal) else None
    status = ctx.status or 500
    reason = ctx.reason
    if reason is None:
        if security is None or not security.auth_enabled:
            reason = "auth disabled"
        elif path in security.public_paths:
            reason = "public path"
        elif not ctx.authorized:
            reason = "authenticated; the route checked no scope"
    return AuditEvent(
        request_id=ctx.request_id,
        method=ctx.method,
        route=ctx.route,
        status=status,
        decision="deny" if ctx.decision == "deny" else decision_for(status),
        reason=reason,
        key_id=principal.key_id if principal else None,
        key_name=principal.name if principal else None,
        client=ctx.client,
        model=ctx.model,
        latency_ms=(time.perf_counter_ns() - ctx.started_ns) / 1e6,
        client_request_id=ctx.client_request_id,
        error_code=ctx.error_code if status >= 400 else None,
        details=_details(ctx, principal),
    )


def _details(ctx: RequestContext, principal: Principal | None) -> dict[str, Any] | None:
    """The record's details: what the route noted, and who forwarded the request (a peer gateway's token)."""
    if principal is None or principal.delegation is None:
        return ctx.details or None
    return {**(ctx.details or {}), "federation": principal.delegation.audit()}


def _json_error(path: str, exc: GarrisonError) -> bytes:
    """The surface's error body (see garrison.api.errors) as bytes."""
    return json.dumps(error_body(path, exc)).encode()


def _new_context(scope: Scope) -> RequestContext:
    """The server's own id for the request; a well-formed x-request-id the client sent is kept beside it."""
    sent = _header(scope, b"x-request-id")
    client = scope.get("client")
    return RequestContext(
        request_id=uuid.uuid4().hex,
        route=scope["path"],
        method=scope["method"],
        client=client[0] if client else None,
        client_request_id=sent if sent and _SAFE_REQUEST_ID.match(sent) else None,
    )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _content_type(headers: list[tuple[bytes, bytes]]) -> bytes:
    for key, value in headers:
        if key.lower() == b"content-type":
            return bytes(value.lower())
    return b""


def _with_request_id(headers: Any, request_id: str) -> list[tuple[bytes, bytes]]:
    kept = [(k, v) for k, v in headers if k.lower() != b"x-request-id"]
    return [*kept, (b"x-request-id", request_id.encode("ascii"))]
