"""The admin API under /admin/ (admin scope): keys create/list/revoke/rotate, usage, audit query, verify."""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from garrison.api.access import authorize
from garrison.api.context import get_context
from garrison.errors import ConfigError, InvalidRequest, PermissionDenied
from garrison.guard.policies import Policies
from garrison.security import Security
from garrison.security.principal import ANY_MODEL, DEFAULT_SCOPES, Limits
from garrison.settings import Settings
from garrison.store.times import parse_duration, parse_expiry, parse_when, utc_day

Environment = Literal["dev", "staging", "prod"]
Scope = Literal["chat", "completions", "embeddings", "metrics", "documents", "documents:write", "admin"]
Clearance = Literal["public", "internal", "confidential", "restricted"]

router = APIRouter(prefix="/admin", tags=["admin"])
_NO_STORE = {"cache-control": "no-store"}
MAX_LIMIT = 2**63 - 1  # the largest integer the store holds


async def _admin(request: Request) -> Security:
    """The Security of an admin-scoped caller (403 while auth is off: keys are then managed by the CLI)."""
    security: Security | None = getattr(request.app.state, "security", None)
    if security is None or not security.auth_enabled:
        error = PermissionDenied(
            "the admin API is off while auth is disabled; use the garrison CLI on the server"
        )
        get_context(request).deny(error.message)
        raise error
    await authorize(request, "admin")
    return security


Admin = Annotated[Security, Depends(_admin)]


class KeyCreate(BaseModel):
    """A new API key's name, environment, permissions and limits."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=100)
    env: Environment | None = Field(default=None, description="Defaults to the server's environment.")
    models: list[str] = Field(default_factory=lambda: [ANY_MODEL], min_length=1)
    scopes: list[Scope] = Field(default_factory=lambda: cast(list[Scope], list(DEFAULT_SCOPES)), min_length=1)
    clearance: Clearance = "public"
    collections: list[str] = Field(default_factory=lambda: ["*"], min_length=1,
                                   description="Document collections the key may read ('*': all).")
    rpm: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    tpm: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    daily_tokens: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    expires: str | None = Field(default=None, description="A duration such as 30d, or a date YYYY-MM-DD.")
    policy: str | None = Field(
        default=None, description="Guardrail policy name; none: the environment's default policy."
    )


class KeyRotate(BaseModel):
    """How long the old secret keeps working after rotation."""

    model_config = ConfigDict(extra="forbid", strict=True)

    grace: str | None = Field(
        default=None, description="A duration such as 10m; none: the old secret stops now."
    )


@router.post("/keys", status_code=201)
def create_key(body: KeyCreate, security: Admin, request: Request) -> JSONResponse:
    """Create a key of the server's environment; the response is the only time its secret is shown."""
    if body.env is not None and body.env != security.env:
        raise PermissionDenied(
            f"this server serves the '{security.env}' environment and cannot create keys for '{body.env}'; "
            f"use a '{body.env}' server's admin API or the garrison CLI on its store",
            param="env",
            code="wrong_environment",
        )
    if body.policy is not None:
        _check_policy(request, body.policy)
    now = security.guard.clock()
    issued = security.keys.create(
        name=body.name,
        env=security.env,
        scopes=body.scopes,
        models=body.models,
        clearance=body.clearance,
        limits=Limits(body.rpm, body.tpm, body.daily_tokens),
        expires_at=parse_expiry(body.expires, now, param="expires") if body.expires else None,
        collections=body.collections,
        policy=body.policy,
    )
    return JSONResponse(issued.to_dict(now), status_code=201, headers=_NO_STORE)


def _check_policy(request: Request, name: str) -> None:
    """400 naming the known policies when `name` is not one this server has."""
    settings: Settings | None = getattr(request.app.state, "settings", None)
    try:
        Policies(settings.guardrails if settings is not None else None).check_name(name)
    except ConfigError as exc:
        raise InvalidRequest(exc.message, param="policy") from None


@router.get("/keys")
def list_keys(security: Admin) -> dict[str, Any]:
    """Every key of the server's environment with its status; never a secret."""
    now = security.guard.clock()
    return {"object": "list", "data": [k.to_dict(now) for k in security.keys.all(security.env)]}


@router.get("/keys/{key_id}")
def get_key(key_id: str, security: Admin) -> dict[str, Any]:
    """One key (404 when unknown or of another environment)."""
    return security.keys.get(key_id, security.env).to_dict(security.guard.clock())


@router.post("/keys/{key_id}/revoke")
def revoke_key(key_id: str, security: Admin) -> dict[str, Any]:
    """Revoke a key now."""
    return security.keys.revoke(key_id, security.env).to_dict(security.guard.clock())


@router.post("/keys/{key_id}/rotate")
def rotate_key(key_id: str, security: Admin, body: KeyRotate | None = None) -> JSONResponse:
    """Give a key a new secret, optionally keeping the old one for a grace period."""
    grace = parse_duration(body.grace, param="grace") if body and body.grace else 0.0
    issued = security.keys.rotate(key_id, grace, security.env)
    return JSONResponse(issued.to_dict(security.guard.clock()), headers=_NO_STORE)


@router.get("/usage")
def usage(
    security: Admin,
    key: str | None = None,
    since: Annotated[str | None, Query(description="First day, YYYY-MM-DD.")] = None,
    until: Annotated[str | None, Query(description="Day after the last, YYYY-MM-DD.")] = None,
) -> dict[str, Any]:
    """Requests and tokens per key, model and UTC day, for the keys of the server's environment."""
    rows = security.usage.rows(
        env=security.env,
        key_id=key,
        since=utc_day(parse_when(since, param="since")) if since else None,
        until=utc_day(parse_when(until, param="until")) if until else None,
    )
    return {"object": "list", "data": [r.to_dict() for r in rows]}


@router.get("/audit")
def audit(
    security: Admin,
    key: str | None = None,
    decision: Literal["allow", "deny"] | None = None,
    since: Annotated[str | None, Query(description="Date or ISO date-time (inclusive).")] = None,
    until: Annotated[str | None, Query(description="Date or ISO date-time (exclusive).")] = None,
    after: Annotated[int, Query(ge=0, le=MAX_LIMIT, description="Return records after this seq (paging).")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """The server environment's audit records in seq order; page with `after` = the last seq seen."""
    records = security.audit.query(
        env=security.env,
        since=parse_when(since, param="since") if since else None,
        until=parse_when(until, param="until") if until else None,
        key_id=key,
        decision=decision,
        after_seq=after,
        limit=limit,
    )
    return {"object": "list", "data": records, "last_seq": records[-1]["seq"] if records else after}


@router.get("/audit/verify")
def verify_audit(security: Admin) -> dict[str, Any]:
    """Recompute the audit chain and its signatures; names the first bad record."""
    result = security.audit.verify()
    return {**result.to_dict(), "message": result.describe()}
