"""The app factory: every piece of state lives on app.state, nothing at module level."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from garrison import __version__
from garrison.api import admin, health, metrics
from garrison.api.access import RequestContextMiddleware
from garrison.api.disconnect import CancelOnDisconnect
from garrison.api.errors import install_error_handlers
from garrison.api.limits import BodyLimitMiddleware
from garrison.api.ollama import router as ollama_router
from garrison.api.openai import router as openai_router
from garrison.security import Security
from garrison.service import InferenceService
from garrison.settings import Settings

log = logging.getLogger(__name__)


def create_app(
    settings: Settings, inference: InferenceService, security: Security | None = None, *, owns_security: bool = False
) -> FastAPI:
    """Build the HTTP app over a loaded inference service; `security` None serves without auth or audit.

    On shutdown the lifespan closes the engines, and the store too when the app owns it (`build()` does).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        """Nothing to start (models load before the app exists); on shutdown close engines, then the store."""
        try:
            yield
        finally:
            try:
                await inference.aclose()
            except Exception:  # noqa: BLE001 - the store must still be closed
                log.exception("closing the engines failed")
            if security is not None and owns_security:
                security.close()

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
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(openai_router.router)
    app.include_router(ollama_router.router)
    app.include_router(admin.router)
    app.include_router(metrics.router)
    app.add_middleware(CancelOnDisconnect)  # innermost: a client gone before its response cancels the handler
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)  # outermost: every response gets an id and an audit record
    return app
