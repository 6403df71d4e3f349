"""The one exception hierarchy. Surfaces map these to their own error bodies by type, never by message."""

from __future__ import annotations


class GarrisonError(Exception):
    """Base of every error garrison raises on purpose; `status` is the HTTP status it maps to."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(GarrisonError):
    """The request is malformed or asks for something the model cannot do (400)."""

    status = 400
    type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    """The prompt (plus requested output) does not fit the model's context window (400)."""

    code = "context_length_exceeded"


class Unauthenticated(GarrisonError):
    """No valid credentials: missing, malformed, unknown, revoked, expired or wrong-environment key (401)."""

    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GarrisonError):
    """The caller is known but not allowed this route, model or data (403)."""

    status = 403
    type = "permission_error"
    code = "permission_denied"


class PolicyViolation(InvalidRequest):
    """A guardrail rule with action `block` fired (400 naming the rule, never the detector's internals)."""

    code = "policy_violation"

    def __init__(self, rule: str, where: str) -> None:
        super().__init__(f"the request was blocked by the guardrail rule '{rule}' ({where})")
        self.rule = rule
        self.where = where


class EgressDenied(PermissionDenied):
    """Data labelled above a model's trust level may not be sent to it (403 naming the label and model)."""

    code = "egress_denied"

    def __init__(self, label: str, model: str, trust: str) -> None:
        super().__init__(
            f"data labelled '{label}' may not be sent to the model '{model}' (its trust level is '{trust}')",
            param="model",
        )
        self.label = label
        self.model = model
        self.trust = trust


class NotFound(GarrisonError):
    """A named resource does not exist (404)."""

    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    """The requested model id is not served here (404 naming it)."""

    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model '{model}' does not exist or is not served here.", param="model")
        self.model = model


class NotImplementedByServer(GarrisonError):
    """A route that garrison deliberately does not provide (501)."""

    status = 501
    type = "not_implemented"
    code = "not_implemented"


class PayloadTooLarge(GarrisonError):
    """The request body exceeds the configured limit (413)."""

    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class RateLimited(GarrisonError):
    """A rate limit or token budget is exhausted (429 with Retry-After)."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(0.0, retry_after)


class Overloaded(GarrisonError):
    """The admission queue is full (503 with Retry-After)."""

    status = 503
    type = "server_overloaded"
    code = "queue_full"

    def __init__(self, message: str, *, retry_after: float = 1.0, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class StoreUnavailable(GarrisonError):
    """The shared store cannot be reached and what the request needs is not covered by the outage grace (503)."""

    status = 503
    type = "service_unavailable"
    code = "store_unavailable"

    def __init__(self, message: str, *, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelIntegrityError(GarrisonError):
    """A model file's digest differs from the one pinned in configuration (refused at start-up)."""


class ConfigError(GarrisonError):
    """The configuration is invalid (reported at start-up, never at request time)."""


class EngineError(GarrisonError):
    """A genuine internal fault inside an engine (500, logged with its traceback)."""


class EngineUnavailable(GarrisonError):
    """The engine cannot take requests right now: its decode loop is down or recovering (503)."""

    status = 503
    type = "server_overloaded"
    code = "engine_unavailable"


class AuditWriteError(GarrisonError):
    """The audit record could not be made durable, so the request fails closed (500)."""


class UpstreamUnavailable(GarrisonError):
    """No replica of a remote model could answer: refused, reset, 5xx, drifted or ejected (502)."""

    status = 502
    type = "upstream_error"
    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamUnavailable):
    """The replicas of a remote model did not answer in time (504)."""

    status = 504
    code = "upstream_timeout"
class Conflict(GarrisonError):
    """The request would overwrite something that exists (409)."""

    status = 409
    type = "invalid_request_error"
    code = "conflict"


class PathOutsideRoot(PermissionDenied):
    """A document path resolves (after symlinks and `..`) outside every designated storage root (403)."""

    code = "path_outside_root"


class UnsupportedDocument(GarrisonError):
    """A file whose kind garrison cannot read as a document (415)."""

    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class UnreadableDocument(GarrisonError):
    """A document of a supported kind that is corrupt, encrypted, empty or mislabelled (422, with the reason)."""

    status = 422
    type = "invalid_request_error"
    code = "unprocessable_document"
