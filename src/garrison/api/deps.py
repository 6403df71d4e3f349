"""Typed dependencies routers share: the inference service and the access check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from garrison.api import access
from garrison.service import InferenceService


def get_service(request: Request) -> InferenceService:
    return request.app.state.inference


ServiceDep = Annotated[InferenceService, Depends(get_service)]


# Routers call this one function after parsing the body and before any engine work.
authorize = access.authorize
# Model listings show only the models the caller's key may use.
visible_models = access.visible_models
