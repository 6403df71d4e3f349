"""The app factory: every piece of state lives on app.state, nothing at module level."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import anyio
from fastapi import FastAPI

from garrison import __version__
from garrison.api import admin, health, metrics
from garrison.api import documents as documents_api
from garrison.api.access import RequestContextMiddleware
from garrison.api.body import JsonBodyMiddleware
from garrison.api.disconnect import CancelOnDisconnect
from garrison.api.errors import install_error_handlers
from garrison.api.limits import BodyLimitMiddleware
from garrison.api.ollama import router as ollama_router
from garrison.api.openai import router as openai_router
from garrison.api.openai.responses import ResponseStore
from garrison.console.web import CONSOLE_PATH
from garrison.documents.library import Change, Library, audit_change
from garrison.security import Security
from garrison.service import InferenceService
from garrison.settings import Settings

log = logging.getLogger(__name__)

_UPLOAD_SLACK = 256 * 1024  # multipart framing around an uploaded file


def create_app(
    settings: Settings,
    inference: InferenceService,
    security: Security | None = None,
    documents: Library | None = None,
    *,
    owns_security: bool = False,
) -> FastAPI:
    """Build the HTTP app over a loaded inference service; `security` None serves without auth or audit.

    On shutdown the lifespan closes the engines, and the store too when the app owns it (`build()` does).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        """Start engines' background work and document re-sync; on shutdown close engines, then the store."""
        await inference.startup()
        try:
            async with _resyncing(documents, security):
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
    app.state.documents = documents
    app.state.metrics = metrics.metrics_registry(inference)
    app.state.responses = ResponseStore()  # /v1/responses stored with store: true, per key
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(openai_router.router)
    app.include_router(ollama_router.router)
    app.include_router(admin.router)
    app.include_router(metrics.router)
    app.include_router(documents_api.router)
    if security is not None and settings.console.enabled:
        from garrison.console.app import mount_console

        mount_console(app, settings, security, inference)
    upload_limit = max(settings.max_body_bytes, settings.documents.max_file_bytes + _UPLOAD_SLACK)
    uploads = {"/v1/documents": upload_limit, "/console/documents": upload_limit}
    # innermost: JSON bodies whatever their Content-Type, inside the size limit (only bodies within it are
    # parsed); the console's forms and document uploads (multipart) are not JSON and pass untouched
    app.add_middleware(JsonBodyMiddleware, exempt_paths={"/v1/documents"}, exempt_prefixes=(CONSOLE_PATH,))
    app.add_middleware(CancelOnDisconnect)  # a client gone before its response cancels the handler
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, per_path=uploads)
    app.add_middleware(RequestContextMiddleware)  # outermost: every response gets an id and an audit record
    return app


@contextlib.asynccontextmanager
async def _resyncing(library: Library | None, security: Security | None) -> AsyncIterator[None]:
    """For the server's lifetime: re-sync the document roots every `sync_interval`."""
    task = None
    if library is not None and library.sync_interval > 0:
        task = asyncio.create_task(_resync(library, security, library.sync_interval))
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _resync(library: Library, security: Security | None, interval: float) -> None:
    while True:
        try:
            report = await anyio.to_thread.run_sync(library.sync)
            if report.changed and security is not None:
                await anyio.to_thread.run_sync(
                    audit_change, security.audit, Change("sync", report.summary()), "server"
                )
            if report.failed or report.refused:
                log.warning("%s", report.summary())
        except Exception:  # noqa: BLE001 - a failed sync is logged and retried at the next interval
            log.exception("documents sync failed")
        await asyncio.sleep(interval)
