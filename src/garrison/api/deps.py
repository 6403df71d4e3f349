"""Typed dependencies routers share: the inference service, the caller, and the generation handler."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from garrison.api import access
from garrison.api.context import get_context
from garrison.domain import new_request_id
from garrison.pipeline.handler import Generation
from garrison.pipeline.ledger import Origin
from garrison.pipeline.stages import Caller
from garrison.security.principal import DATA_LABEL_HEADER
from garrison.service import InferenceService


async def get_service(request: Request) -> InferenceService:
    return request.app.state.inference


ServiceDep = Annotated[InferenceService, Depends(get_service)]


def caller_of(request: Request, service: InferenceService) -> Caller:
    """Who is calling: the key the middleware authenticated, or the anonymous caller when auth is off."""
    security = getattr(request.app.state, "security", None)
    if security is None or not security.auth_enabled:
        return service.anonymous()
    ctx = get_context(request)
    if ctx.principal is None:  # a route mounted without the middleware
        ctx.principal = security.guard.authenticate(request.headers.get("authorization"))
    principal: Caller = ctx.principal
    return principal


async def get_caller(request: Request, service: ServiceDep) -> Caller:
    return caller_of(request, service)


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_generation(request: Request) -> Generation:
    """The pipeline's handler bound to this HTTP request, for the key that is calling.

    One dependency with none under it: FastAPI solves a dependency tree again on every request.
    """
    service: InferenceService = request.app.state.inference
    return bind_generation(request, service, caller_of(request, service))


def bind_generation(request: Request, service: InferenceService, caller: Caller) -> Generation:
    """The pipeline's handler bound to this HTTP request (its ids and client go into the audit records)."""
    ctx = get_context(request)
    origin = Origin(
        request_id=ctx.request_id if ctx.request_id != "-" else new_request_id(),
        method=ctx.method, route=ctx.route, client=ctx.client,
        client_request_id=ctx.client_request_id, started_ns=ctx.started_ns,
    )
    ctx.origin = origin
    return Generation(service, caller, origin, data_label=declared_label(request))


def declared_label(request: Request) -> str | None:
    """The classification the caller declares for what it sends (public, internal, confidential, restricted)."""
    value = request.headers.get(DATA_LABEL_HEADER)
    return value.strip().lower() if value is not None and value.strip() else None


GenerationDep = Annotated[Generation, Depends(get_generation)]

# Listing and admin routes call this after parsing the body; generations are checked by the pipeline.
authorize = access.authorize
# Model listings show only the models the caller's key may use.
visible_models = access.visible_models
