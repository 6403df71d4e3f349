"""One error body per surface, chosen by the route's surface and the exception's type."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from garrison.errors import GarrisonError, InvalidRequest, NotFound, Overloaded, RateLimited

log = logging.getLogger(__name__)

_HTTP_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
               429: "rate_limit_error", 503: "server_overloaded"}


def is_ollama_path(path: str) -> bool:
    """Ollama's API lives under /api/; everything else speaks the OpenAI error shape."""
    return path.startswith("/api/")


def openai_error_body(exc: GarrisonError) -> dict[str, Any]:
    return {"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}}


def ollama_error_body(exc: GarrisonError) -> dict[str, Any]:
    return {"error": exc.message}


def error_body(path: str, exc: GarrisonError) -> dict[str, Any]:
    return ollama_error_body(exc) if is_ollama_path(path) else openai_error_body(exc)


def error_headers(exc: GarrisonError) -> dict[str, str]:
    if isinstance(exc, RateLimited | Overloaded):
        return {"Retry-After": str(max(1, round(exc.retry_after + 0.499)))}
    return {}


def error_response(path: str, exc: GarrisonError) -> JSONResponse:
    return JSONResponse(error_body(path, exc), status_code=exc.status, headers=error_headers(exc))


def _answer(request: Request, exc: GarrisonError) -> JSONResponse:
    """The error response, with what happened noted for the request's audit record."""
    ctx = request.scope.get("state", {}).get("ctx")
    if ctx is not None:
        ctx.note(exc)
    return error_response(request.url.path, exc)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request body", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON", None
    field = ".".join(loc) or None
    message = first.get("msg", "invalid value")
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return (f"{field}: {message}{more}" if field else f"{message}{more}"), field


def install_error_handlers(app: FastAPI) -> None:
    """Map every failure to the surface's error body; never a traceback to a client."""

    @app.exception_handler(GarrisonError)
    async def _garrison(request: Request, exc: GarrisonError) -> JSONResponse:
        if exc.status >= 500 and exc.status != 501:  # 501 is a deliberate answer, not a fault
            log.error("request %s failed: %s", request.url.path, exc.message)
        return _answer(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, field = _validation_message(exc)
        return _answer(request, InvalidRequest(message, param=field))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            err: GarrisonError = NotFound(f"no route {request.method} {request.url.path}")
        else:
            err = GarrisonError(str(exc.detail))
            err.status = exc.status_code
            err.type = _HTTP_TYPES.get(exc.status_code, "server_error")
        return _answer(request, err)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        ctx = request.scope.get("state", {}).get("ctx")
        if ctx is not None:
            ctx.note(GarrisonError(f"unhandled {type(exc).__name__}"))
        return error_response(request.url.path, GarrisonError("internal server error"))
