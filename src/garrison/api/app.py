"""The app factory: every piece of state lives on app.state, nothing at module level."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from garrison import __version__
from garrison.api import admin, health, metrics
from garrison.api.access import RequestContextMiddleware
from garrison.api.errors import install_error_handlers
from garrison.api.limits import BodyLimitMiddleware
from garrison.api.ollama import router as ollama_router
from garrison.api.openai import router as openai_router
from garrison.api.openai.responses import ResponseStore
from garrison.security import Security
from garrison.service import InferenceService
from garrison.settings import Settings


def create_app(settings: Settings, inference: InferenceService, security: Security | None = None) -> FastAPI:
    """Build the HTTP app over a loaded inference service; `security` None serves without auth or audit."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await inference.aclose()

    inference.attach_security(security)
    app = FastAPI(
        lifespan=lifespan,
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
    app.state.metrics = metrics.metrics_registry(inference)
    app.state.responses = ResponseStore()  # /v1/responses stored with store: true, per key
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(openai_router.router)
    app.include_router(ollama_router.router)
    app.include_router(admin.router)
    app.include_router(metrics.router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)  # outermost: every response gets an id and an audit record
    return app
