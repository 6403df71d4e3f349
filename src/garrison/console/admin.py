"""Console administration (admin role): users, keys, usage charts, the audit log, and the served models.

Everything acts inside the server's environment only, as the admin API does.
"""

from __future__ import annotations

import functools
from collections import deque
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from garrison.api.context import get_context
from garrison.console import charts
from garrison.console.auth import AdminForm, AdminUser, SignedIn, checked_scopes, console_of, expiry
from garrison.console.sessions import end_user_sessions
from garrison.console.web import CONSOLE_PATH, ConsoleRoute
from garrison.errors import GarrisonError, InvalidRequest
from garrison.security.principal import CLEARANCES, SCOPES, Limits
from garrison.security.users import new_password, parse_grants
from garrison.store.times import parse_duration, parse_when, to_iso, utc_day

router = APIRouter(prefix=f"{CONSOLE_PATH}/admin", include_in_schema=False, route_class=ConsoleRoute)
_USAGE_DAYS = 14
_AUDIT_ROWS = 100


def _int_or_none(form: dict[str, Any], name: str) -> int | None:
    text = str(form.get(name) or "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise InvalidRequest(f"{name} must be a positive whole number", param=name)
    return int(text)


def _grants_from(form: dict[str, Any]) -> Any:
    return parse_grants(
        role=str(form.get("role") or "user"),
        scopes=checked_scopes(form),
        models=str(form.get("models") or "*").split(","),
        clearance=str(form.get("clearance") or "public"),
        limits=Limits(_int_or_none(form, "rpm"), _int_or_none(form, "tpm"), _int_or_none(form, "daily_tokens")),
        collections=str(form.get("collections") or "*").split(","),
    )


def _note(request: Request, text: str) -> None:
    get_context(request).reason = f"console admin: {text}"


# --- users -----------------------------------------------------------------------------------------------


def _users_page(request: Request, who: SignedIn, *, error: str | None = None, status: int = 200,
                password: dict[str, str] | None = None) -> Response:
    console = console_of(request)
    return console.page(
        "admin_users.html", request, who, status=status, error=error, password=password,
        users=console.users.all(console.security.env), roles=("user", "admin"), scopes=SCOPES,
        clearances=CLEARANCES,
    )


@router.get("/users")
async def users_page(request: Request, who: AdminUser) -> Response:
    return _users_page(request, who)


@router.post("/users")
async def users_create(request: Request, who: AdminUser, form: AdminForm) -> Response:
    """A local user; with an empty password field a random one is generated and shown once."""
    console = console_of(request)
    typed = str(form.get("password") or "")
    password = typed or new_password()
    try:  # Argon2 hashing takes a tenth of a second: in a thread, so every other request goes on meanwhile
        user = await anyio.to_thread.run_sync(functools.partial(
            console.users.create,
            username=str(form.get("username") or ""), env=console.security.env, grants=_grants_from(form),
            password=password, display_name=str(form.get("display_name") or "").strip() or None,
        ))
    except GarrisonError as exc:
        return _users_page(request, who, error=exc.message, status=exc.status)
    _note(request, f"created {user.role} '{user.username}' ({user.id})")
    shown = None if typed else {"username": user.username, "password": password}
    return _users_page(request, who, password=shown, status=201)


def _user_in_env(request: Request, user_id: str) -> Any:
    console = console_of(request)
    user = console.users.get(user_id)
    if user.env != console.security.env:
        raise InvalidRequest(f"user '{user_id}' belongs to another environment", param="id")
    return user


@router.post("/users/{user_id}/disable")
async def users_disable(user_id: str, request: Request, who: AdminUser, form: AdminForm) -> Response:
    console = console_of(request)
    user = _user_in_env(request, user_id)
    if user.id == who.user.id:
        return _users_page(request, who, error="you cannot disable yourself", status=400)
    console.users.disable(user.id)
    ended = end_user_sessions(console.security.store, user.id, console.security.guard.clock())
    _note(request, f"disabled '{user.username}' (ended {ended} sessions, revoked its personal keys)")
    return RedirectResponse(f"{CONSOLE_PATH}/admin/users", status_code=303)


@router.post("/users/{user_id}/enable")
async def users_enable(user_id: str, request: Request, who: AdminUser, form: AdminForm) -> Response:
    user = console_of(request).users.enable(_user_in_env(request, user_id).id)
    _note(request, f"enabled '{user.username}'")
    return RedirectResponse(f"{CONSOLE_PATH}/admin/users", status_code=303)


@router.post("/users/{user_id}/reset")
async def users_reset(user_id: str, request: Request, who: AdminUser, form: AdminForm) -> Response:
    """A new random password, shown once; the user's sessions end."""
    console = console_of(request)
    user = _user_in_env(request, user_id)
    password = new_password()
    try:
        await anyio.to_thread.run_sync(console.users.set_password, user.id, password)  # Argon2: off the loop
    except GarrisonError as exc:
        return _users_page(request, who, error=exc.message, status=exc.status)
    end_user_sessions(console.security.store, user.id, console.security.guard.clock())
    _note(request, f"reset the password of '{user.username}'")
    return _users_page(request, who, password={"username": user.username, "password": password})


# --- keys ------------------------------------------------------------------------------------------------


def _keys_page(request: Request, who: SignedIn, *, issued: dict[str, Any] | None = None, error: str | None = None,
               status: int = 200) -> Response:
    console = console_of(request)
    now = console.security.guard.clock()
    owners = console.users.owners()
    keys = [
        {**k.to_dict(now), "owner": owners.get(k.id)}
        for k in console.security.keys.all() if k.env == console.security.env
    ]
    return console.page(
        "admin_keys.html", request, who, status=status, keys=keys, issued=issued, error=error,
        scopes=SCOPES, clearances=CLEARANCES,
    )


def _key_in_env(request: Request, key_id: str) -> Any:
    console = console_of(request)
    record = console.security.keys.get(key_id)
    if record.env != console.security.env:
        raise InvalidRequest(f"API key '{key_id}' belongs to another environment", param="id")
    return record


@router.get("/keys")
async def keys_page(request: Request, who: AdminUser) -> Response:
    return _keys_page(request, who)


@router.post("/keys")
async def keys_create(request: Request, who: AdminUser, form: AdminForm) -> Response:
    """A key of this environment; its secret is on this response only."""
    console = console_of(request)
    now = console.security.guard.clock()
    try:
        grants = _grants_from(form)
        issued = console.security.keys.create(
            name=str(form.get("name") or ""), env=console.security.env, scopes=grants.scopes,
            models=grants.models, clearance=grants.clearance, limits=grants.limits,
            expires_at=expiry(form, now), collections=grants.collections,
        )
    except GarrisonError as exc:
        return _keys_page(request, who, error=exc.message, status=exc.status)
    _note(request, f"created key {issued.record.id} '{issued.record.name}'")
    return _keys_page(request, who, issued={**issued.to_dict(now), "action": "created"}, status=201)


@router.post("/keys/{key_id}/revoke")
async def keys_revoke(key_id: str, request: Request, who: AdminUser, form: AdminForm) -> Response:
    record = console_of(request).security.keys.revoke(_key_in_env(request, key_id).id)
    _note(request, f"revoked key {record.id} '{record.name}'")
    return RedirectResponse(f"{CONSOLE_PATH}/admin/keys", status_code=303)


@router.post("/keys/{key_id}/rotate")
async def keys_rotate(key_id: str, request: Request, who: AdminUser, form: AdminForm) -> Response:
    console = console_of(request)
    try:
        record = _key_in_env(request, key_id)
        grace = str(form.get("grace") or "").strip()
        issued = console.security.keys.rotate(record.id, parse_duration(grace) if grace else 0.0)
    except GarrisonError as exc:
        return _keys_page(request, who, error=exc.message, status=exc.status)
    _note(request, f"rotated key {key_id}")
    return _keys_page(request, who, issued={**issued.to_dict(console.security.guard.clock()), "action": "rotated"})


# --- usage -----------------------------------------------------------------------------------------------


@router.get("/usage")
async def usage_page(request: Request, who: AdminUser) -> Response:
    """Tokens per day per key and per user (a user's console requests plus its personal keys), as SVG."""
    console = console_of(request)
    today = utc_day(console.security.guard.clock())
    days = charts.day_range(today, _USAGE_DAYS)
    env_keys = {k.id: k.name for k in console.security.keys.all() if k.env == console.security.env}
    owners = console.users.owners()
    rows = [r for r in console.security.usage.rows(since=days[0]) if r.key_id in env_keys or r.key_id in owners]
    by_key = charts.daily_series(
        (f"{env_keys.get(r.key_id) or 'user:' + owners.get(r.key_id, '?')} ({r.key_id})", r.day, r.total_tokens)
        for r in rows
    )
    by_user = charts.daily_series((owners[r.key_id], r.day, r.total_tokens) for r in rows if r.key_id in owners)
    return console.page(
        "admin_usage.html", request, who, days=days, rows=rows, owners=owners, names=env_keys,
        key_chart=charts.stacked_bars("Tokens per day by key", by_key, days),
        key_legend=charts.legend(by_key),
        user_chart=charts.stacked_bars("Tokens per day by user", by_user, days),
        user_legend=charts.legend(by_user),
    )


# --- audit -----------------------------------------------------------------------------------------------


def _audit_page(request: Request, who: SignedIn, verification: Any = None) -> Response:
    console = console_of(request)
    q = request.query_params
    filters = {name: q.get(name, "").strip() for name in ("key", "decision", "since", "until", "route")}
    error = None
    records: list[dict[str, Any]] = []
    try:
        decision = filters["decision"] or None
        if decision not in (None, "allow", "deny"):
            raise InvalidRequest("decision must be allow or deny", param="decision")
        after = int(q.get("after", "0") or 0) if q.get("after", "0").isdigit() else 0
        rows = console.security.audit.records(
            since=parse_when(filters["since"]) if filters["since"] else None,
            until=parse_when(filters["until"]) if filters["until"] else None,
            key_id=filters["key"] or None, decision=decision, after_seq=after,
        )
        env, route = console.security.env, filters["route"]
        kept = deque((r for r in rows if r["env"] == env and route in r["route"]), maxlen=_AUDIT_ROWS)
        records = list(kept)[::-1]  # the newest matching records first
    except GarrisonError as exc:
        error = exc.message
    return console.page(
        "admin_audit.html", request, who, filters=filters, records=records, error=error,
        verification=verification, total=console.security.audit.count(),
    )


@router.get("/audit")
async def audit_page(request: Request, who: AdminUser) -> Response:
    return _audit_page(request, who)


@router.post("/audit/verify")
async def audit_verify(request: Request, who: AdminUser, form: AdminForm) -> Response:
    """Recompute the whole chain and its signatures and show the outcome."""
    result = console_of(request).security.audit.verify()
    _note(request, f"verified the audit chain: {'intact' if result.ok else 'TAMPERED'}")
    return _audit_page(request, who, verification={"ok": result.ok, "message": result.describe(),
                                                   "records": result.records, "head": result.head})


# --- models ----------------------------------------------------------------------------------------------


@router.get("/models")
async def models_page(request: Request, who: AdminUser) -> Response:
    """Every served model with its load (admission) and its engine's scheduler metrics."""
    console = console_of(request)
    service = console.inference
    load, engine = service.load_state(), service.engine_metrics()
    models = [
        {"info": m, "load": load.get(m.id, {}), "engine": engine.get(m.id, {})}
        for m in service.registry
    ]
    return console.page("admin_models.html", request, who, models=models, checked_at=to_iso(
        console.security.guard.clock()))
