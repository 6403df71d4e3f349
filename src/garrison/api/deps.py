"""Typed dependencies routers share: the inference service and the access check."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from garrison.service import InferenceService


def get_service(request: Request) -> InferenceService:
    return request.app.state.inference


ServiceDep = Annotated[InferenceService, Depends(get_service)]


async def authorize(request: Request, scope: str, model: str | None = None, estimated_tokens: int = 0) -> Any:
    """Authenticate, authorize and admit the caller before any engine work; no-op when auth is off."""
    if getattr(request.app.state, "security", None) is None:
        return None
    from garrison.api import access

    return await access.authorize(request, scope, model=model, estimated_tokens=estimated_tokens)
