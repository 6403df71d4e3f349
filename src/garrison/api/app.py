"""The app factory: every piece of state lives on app.state, nothing at module level."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from garrison import __version__
from garrison.api import health
from garrison.api.errors import install_error_handlers
from garrison.api.limits import BodyLimitMiddleware
from garrison.api.openai import router as openai_router
from garrison.service import InferenceService
from garrison.settings import Settings


def create_app(settings: Settings, inference: InferenceService, security: Any = None) -> FastAPI:
    """Build the HTTP app over an already-loaded inference service (and security, when auth is on)."""
    app = FastAPI(
        title="garrison",
        version=__version__,
        description="Self-hosted LLM platform: OpenAI- and Ollama-compatible APIs over local models.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    app.state.inference = inference
    app.state.security = security
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(openai_router.router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    return app
