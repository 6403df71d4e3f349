"""HTTP side of access control: `authorize` for routers; the middleware that ids, guards and audits."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Iterable
from typing import Any

import anyio
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from garrison.api.context import RequestContext, get_context
from garrison.api.errors import error_body, error_headers
from garrison.audit.log import AuditEvent, AuditLog
from garrison.errors import AuditWriteError, GarrisonError, Unauthenticated
from garrison.registry import ModelInfo
from garrison.security import Security
from garrison.security.principal import Principal

log = logging.getLogger("garrison.audit")

_CONSOLE, _CONSOLE_STATIC = "/console", "/console/static/"  # console routes check their own session cookie
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_STREAMING_TYPES = (b"text/event-stream", b"application/x-ndjson")
_END_MARKERS = {  # how each stream says "complete": OpenAI's `data: [DONE]`, Ollama's `"done": true` line
    b"text/event-stream": re.compile(rb"^data: ?\[DONE\]", re.MULTILINE),
    b"application/x-ndjson": re.compile(rb'"done"\s*:\s*true'),
}


async def authorize(
    request: Request,
    scope: str | None,
    model: str | None = None,
    estimated_tokens: int = 0,
    *,
    clearance: str | None = None,
) -> Principal | None:
    """Authenticate, authorize and admit this request before any engine work; None when auth is off.

    `scope` is chat|completions|embeddings|admin (None: any valid key); on denial the reason goes on the
    request context and the garrison error (401/403/429) propagates to the surface's error handler.
    """
    ctx = get_context(request)
    if model is not None:
        ctx.model = model
    security: Security | None = getattr(request.app.state, "security", None)
    if security is None or not security.auth_enabled:
        return None
    guard = security.guard
    try:
        principal = ctx.principal or guard.authenticate(request.headers.get("authorization"))
        ctx.principal = principal
        guard.authorize(principal, scope, model, clearance=clearance)
        guard.admit(principal, estimated_tokens)
    except GarrisonError as exc:
        ctx.deny(exc.message)
        raise
    ctx.authorized = True
    ctx.reserved_tokens += max(0, estimated_tokens)
    return principal


async def visible_models(request: Request, models: Iterable[ModelInfo]) -> list[ModelInfo]:
    """Authenticate a model listing (any valid key) and keep the models that key may use (all without auth)."""
    principal = await authorize(request, None)
    return [m for m in models if principal is None or principal.allows_model(m.id)]


class RequestContextMiddleware:
    """Pure ASGI middleware: request id, authentication of every non-public path, and a durable audit record.

    Non-streaming responses are buffered and released only after their audit record is committed; streams
    (SSE, NDJSON) flow through, but their end marker (`data: [DONE]`, the `"done": true` line) and final
    message wait for the record. If the audit write fails the client gets a 500, or an error event in
    place of the end marker: the request fails closed. With `app.state.security` None it only adds ids.
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
        audited = security is not None and path not in security.audit_exclude_paths
        audit = security.audit if audited and not path.startswith(_CONSOLE_STATIC) else None
        exchange = _Exchange(ctx, security, audit, send, path)
        bearer = not (path == _CONSOLE or path.startswith(_CONSOLE + "/"))  # the console signs in by session
        if security is not None and security.auth_enabled and bearer and path not in security.public_paths:
            try:  # deny by default: no route runs for an unauthenticated caller, known path or not
                ctx.principal = security.guard.authenticate(_header(scope, b"authorization"))
            except Unauthenticated as exc:
                ctx.deny(exc.message)
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
        self.streaming = False
        self.stream_type = b""
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
            if self.audit is None or content_type.startswith(_STREAMING_TYPES):
                self.streaming, self.stream_type = True, content_type
                await self._forward(message)
            else:
                self.start = message
            return
        if kind != "http.response.body":
            await self._forward(message)
            return
        more, body = message.get("more_body", False), message.get("body", b"")
        if not self.streaming:
            self.body.append(body)
            if not more:
                await self._release()
            return
        if more and not self.body and not _ends_stream(self.stream_type, body):
            await self._forward(message)
            return
        self.body.append(body)  # the stream's end marker, and all after it, wait for the audit record
        if more:
            return
        self.ended = True
        tail = b"".join(self.body) if await self._write_audit() else self._stream_error()
        await self._forward({"type": kind, "body": tail, "more_body": False})

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
            self.ctx.reason = self.ctx.reason or "the stream ended early (client disconnected?)"
        if self.start is not None and not self.started:
            await self._release()
        else:
            await self._write_audit()

    async def abort(self, exc: BaseException) -> None:
        """The app raised (the caller re-raises): if nothing went out, send an audited 500 with our id."""
        self.ctx.reason = self.ctx.reason or f"unhandled {type(exc).__name__}"
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

    def _stream_error(self) -> bytes:
        error = AuditWriteError("the stream failed closed: its audit record could not be written")
        body = _json_error(self.path, error)
        return (
            b"data: " + body + b"\n\n" if self.stream_type.startswith(b"text/event-stream") else body + b"\n"
        )

    async def _write_audit(self) -> bool:
        """Settle usage and commit the audit record (once); False when the record is not durable."""
        if self.audited is not None:
            return self.audited
        self.audited = True
        if self.audit is None and not self.ctx.authorized:
            return True
        try:
            await anyio.to_thread.run_sync(self._write, self.audit)
        except Exception as exc:  # any failure to record fails the request closed
            log.error("audit write failed for request %s: %s", self.ctx.request_id, exc)
            self.audited = False
        return self.audited

    def _write(self, audit: AuditLog | None) -> None:
        """Usage and audit record in one transaction: one fsync, and neither lands without the other."""
        if audit is None:
            self._settle_usage()
            return
        with audit.transaction():
            self._settle_usage()
            audit.append(_event(self.ctx, self.security, self.path))

    def _settle_usage(self) -> None:
        ctx, principal = self.ctx, self.ctx.principal
        if ctx.authorized and self.security is not None and isinstance(principal, Principal):
            self.security.guard.record_usage(
                principal,
                ctx.model,
                ctx.prompt_tokens,
                ctx.completion_tokens,
                reserved_tokens=ctx.reserved_tokens,
            )


def _event(ctx: RequestContext, security: Security | None, path: str) -> AuditEvent:
    principal = ctx.principal if isinstance(ctx.principal, Principal) else None
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
        status=ctx.status or 500,
        decision=ctx.decision,
        reason=reason,
        key_id=principal.key_id if principal else None,
        key_name=principal.name if principal else None,
        client=ctx.client,
        model=ctx.model,
        prompt_tokens=ctx.prompt_tokens,
        completion_tokens=ctx.completion_tokens,
        latency_ms=(time.perf_counter_ns() - ctx.started_ns) / 1e6,
        prompt_text=ctx.prompt_text,
        response_text=ctx.response_text,
    )


def _ends_stream(content_type: bytes, chunk: bytes) -> bool:
    """Whether a stream chunk carries its protocol's end marker (held back until the audit is durable)."""
    for media_type, marker in _END_MARKERS.items():
        if content_type.startswith(media_type):
            return marker.search(chunk) is not None
    return False


def _json_error(path: str, exc: GarrisonError) -> bytes:
    """The surface's error body (see garrison.api.errors) as bytes."""
    return json.dumps(error_body(path, exc)).encode()


def _new_context(scope: Scope) -> RequestContext:
    sent = _header(scope, b"x-request-id")
    request_id = sent if sent and _SAFE_REQUEST_ID.match(sent) else uuid.uuid4().hex
    client = scope.get("client")
    return RequestContext(
        request_id=request_id,
        route=scope["path"],
        method=scope["method"],
        client=client[0] if client else None,
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
