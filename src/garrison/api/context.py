"""Per-request HTTP context: the server's id for the request, who called, and how the response went."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from garrison.errors import GarrisonError

if TYPE_CHECKING:
    from garrison.pipeline.ledger import Origin


@dataclass(slots=True)
class RequestContext:
    """Filled in as a request moves through the middleware, the route and the error handlers.

    Billing and content never live here: the pipeline records those from the domain result. The
    middleware writes this request's audit record only when the pipeline wrote none (`origin`).
    """

    request_id: str
    route: str
    method: str
    client: str | None
    client_request_id: str | None = None  # the x-request-id the client sent, kept apart from ours
    started_ns: int = field(default_factory=time.perf_counter_ns)
    principal: Any = None
    model: str | None = None
    decision: str = "allow"
    reason: str | None = None
    error_code: str | None = None
    status: int | None = None
    authorized: bool = False  # access.authorize passed scope, model and quota checks
    origin: Origin | None = None  # set when the request entered the pipeline
    details: dict[str, Any] | None = None  # JSON-safe facts for the audit record (guard verdicts); never content

    def deny(self, reason: str) -> None:
        self.decision = "deny"
        self.reason = reason

    def note(self, exc: GarrisonError) -> None:
        """The error this request is answered with (the audit record says what happened)."""
        self.error_code = exc.code or exc.type
        self.reason = self.reason or exc.message
        if exc.status in (401, 403, 429):
            self.decision = "deny"

    @property
    def audited_by_pipeline(self) -> bool:
        return self.origin is not None and self.origin.records > 0


def get_context(request: Request) -> RequestContext:
    """The context the request-context middleware attached to this request."""
    ctx: RequestContext | None = request.scope.get("state", {}).get("ctx")
    if ctx is None:  # a route mounted without the middleware (unit tests of a bare router)
        ctx = RequestContext(
            request_id="-", route=request.url.path, method=request.method,
            client=request.client.host if request.client else None,
        )
        request.scope.setdefault("state", {})["ctx"] = ctx
    return ctx
