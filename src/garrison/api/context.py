"""Per-request context: who called, what they asked for, what it cost. Read by audit and usage."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request


@dataclass(slots=True)
class RequestContext:
    """Filled in as a request moves through auth, the router and the engine; one per HTTP request."""

    request_id: str
    route: str
    method: str
    client: str | None
    started_ns: int = field(default_factory=time.perf_counter_ns)
    principal: Any = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    decision: str = "allow"
    reason: str | None = None
    prompt_text: str | None = None
    response_text: str | None = None
    status: int | None = None
    authorized: bool = False  # access.authorize passed scope, model and quota checks
    reserved_tokens: int = 0  # tokens admit() reserved; settled against the actual count at the end

    def deny(self, reason: str) -> None:
        self.decision = "deny"
        self.reason = reason


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
