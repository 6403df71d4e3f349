"""What an upstream's answer means for garrison: a client error to pass on, or a replica failure to route around."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from garrison.domain import EmbeddingRequest, EmbeddingResult
from garrison.errors import (
    ContextLengthExceeded,
    GarrisonError,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)

FailureKind = Literal["connect", "status", "protocol", "timeout"]
_MAX_MESSAGE = 500
# Bodies of a 404 for a route the server does not have (FastAPI/Starlette, Go's net/http, aiohttp).
_NO_ROUTE = ("Not Found", "404 page not found", "404: Not Found")


class ReplicaFailure(Exception):
    """One replica failed to answer (refused, reset, 5xx, malformed, too slow); another may be tried."""

    def __init__(
        self, message: str, kind: FailureKind, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Connection errors, 5xx and broken answers are retried elsewhere; a replica that is too slow is not."""
        return self.kind != "timeout"


@dataclass(slots=True, frozen=True)
class UpstreamMessage:
    message: str
    param: str | None = None
    code: str | None = None


def upstream_message(body: bytes) -> UpstreamMessage:
    """The error text an upstream sent, in whichever shape it uses (OpenAI, vLLM, TGI, Ollama, FastAPI)."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return UpstreamMessage(text[:_MAX_MESSAGE] or "(empty response)")
    if not isinstance(data, dict):
        return UpstreamMessage(text[:_MAX_MESSAGE])
    error = data.get("error")
    if isinstance(error, dict):
        param, code = error.get("param"), error.get("code")
        return UpstreamMessage(
            str(error.get("message") or text)[:_MAX_MESSAGE],
            param=param if isinstance(param, str) else None,
            code=code if isinstance(code, str) else None,
        )
    if isinstance(error, str):  # Ollama, TGI
        return UpstreamMessage(error[:_MAX_MESSAGE])
    if isinstance(data.get("message"), str):  # vLLM's older {"object": "error", "message": ...}
        return UpstreamMessage(data["message"][:_MAX_MESSAGE])
    detail = data.get("detail")
    if isinstance(detail, str):
        return UpstreamMessage(detail[:_MAX_MESSAGE])
    if isinstance(detail, list):  # FastAPI validation errors
        parts = [f"{'.'.join(str(p) for p in d.get('loc', ()) if p != 'body')}: {d.get('msg')}"
                 for d in detail if isinstance(d, dict)]
        return UpstreamMessage("; ".join(parts)[:_MAX_MESSAGE] or text[:_MAX_MESSAGE])
    return UpstreamMessage(text[:_MAX_MESSAGE])


def retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from engines; the caller's default applies


def status_error(
    status: int, body: bytes, headers: Mapping[str, str], *, model_id: str, replica: str, path: str
) -> GarrisonError | ReplicaFailure:
    """Map a non-2xx answer: 4xx become the garrison error the client should see, 5xx a replica failure."""
    said = upstream_message(body)
    if status >= 500:
        return ReplicaFailure(f"HTTP {status}: {said.message}", "status", status=status,
                              retry_after=retry_after(headers))
    if status == 404:
        if said.message in _NO_ROUTE:
            return unsupported(model_id, f"the upstream {replica} has no {path} endpoint")
        return ModelNotFound(model_id)
    if status == 429:
        wait = retry_after(headers)
        return RateLimited(f"the upstream of '{model_id}' is rate limiting: {said.message}",
                           retry_after=1.0 if wait is None else wait)
    if status == 413:
        return PayloadTooLarge(said.message)
    if status in (401, 403):
        return UpstreamUnavailable(
            f"the upstream {replica} rejected garrison's credentials for '{model_id}' (HTTP {status}); "
            "check the model's api_key_env"
        )
    if status in (405, 501):
        return unsupported(model_id, f"the upstream {replica} does not support {path}")
    if said.code == "context_length_exceeded":
        return ContextLengthExceeded(said.message, param=said.param)
    return InvalidRequest(said.message, param=said.param, code=said.code)


def unsupported(model_id: str, what: str) -> InvalidRequest:
    """A feature the model's upstream does not offer (400, never a 500)."""
    return InvalidRequest(f"model '{model_id}' cannot do this: {what}", param="model", code="unsupported_feature")


def no_replica(model_id: str, failures: Sequence[tuple[str, ReplicaFailure]], idle: str | None) -> GarrisonError:
    """The error when no replica answered: 504 if they were all too slow, 503 if all busy, else 502."""
    if not failures:
        return UpstreamUnavailable(f"no replica of model '{model_id}' can take requests: {idle or 'none configured'}")
    detail = "; ".join(f"{url}: {f.message}" for url, f in failures)
    message = f"no replica of model '{model_id}' could answer ({detail})"
    if idle:
        message += f"; not tried: {idle}"
    if all(f.kind == "timeout" for _, f in failures):
        return UpstreamTimeout(message)
    if all(f.status == 503 for _, f in failures):
        waits = [f.retry_after for _, f in failures if f.retry_after is not None]
        return Overloaded(message, retry_after=min(waits) if waits else 1.0)
    return UpstreamUnavailable(message)


def describe(exc: BaseException) -> str:
    """A short reason for a transport exception, for the replica's state and the 502 message."""
    os_error = getattr(exc, "os_error", None)  # aiohttp's ClientConnectorError wraps the socket's error
    if isinstance(os_error, OSError):
        return f"cannot connect ({type(os_error).__name__})"
    name = type(exc).__name__
    text = str(exc).strip()
    return f"{name}: {text}" if text else name


def json_object(body: bytes, where: str) -> dict[str, Any]:
    """Parse an upstream's JSON object; a broken one is a replica failure (so another replica is tried)."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ReplicaFailure(f"{where}: the answer is not JSON ({exc})", "protocol") from None
    if not isinstance(data, dict):
        raise ReplicaFailure(f"{where}: the answer is not a JSON object", "protocol")
    return data


def embedding_result(vectors: Any, tokens: Any, request: EmbeddingRequest) -> EmbeddingResult:
    """Vectors an upstream returned for `request` (a replica failure when they do not match its inputs)."""
    if not isinstance(vectors, list) or len(vectors) != len(request.inputs):
        raise ReplicaFailure(f"expected {len(request.inputs)} embeddings in the answer", "protocol")
    if any(not isinstance(v, list) for v in vectors):
        raise ReplicaFailure("an embedding is not a list of numbers (ask for encoding_format=float)", "protocol")
    counted = tokens if isinstance(tokens, int) else sum(len(t) for t in request.inputs) // 4
    return EmbeddingResult(model=request.model, vectors=vectors, prompt_tokens=counted)
