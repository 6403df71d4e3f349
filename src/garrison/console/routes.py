"""Console pages every signed-in user has: chat (conversations per user) and personal API keys."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from garrison.api.context import get_context
from garrison.console.app import Console
from garrison.console.auth import SignedIn, User, UserForm, checked_scopes, console_of, expiry
from garrison.console.chat import ask, chat_models, check_question
from garrison.console.web import CONSOLE_PATH, ConsoleRoute
from garrison.errors import GarrisonError, InvalidRequest
from garrison.security.principal import CLEARANCES, SCOPES, Limits

router = APIRouter(prefix=CONSOLE_PATH, include_in_schema=False, route_class=ConsoleRoute)


@router.get("")
@router.get("/")
async def home() -> Response:
    return RedirectResponse(f"{CONSOLE_PATH}/chat", status_code=303)


def _chat_page(request: Request, console: Console, who: SignedIn, conv_id: str | None = None,
               error: str | None = None, status: int = 200) -> Response:
    conversations = console.conversations.of_user(who.user.id)
    current = console.conversations.get(who.user.id, conv_id) if conv_id else None
    messages = console.conversations.messages(who.user.id, conv_id) if conv_id else []
    return console.page(
        "chat.html", request, who, status=status, conversations=conversations, current=current,
        messages=messages, models=chat_models(console, who), error=error,
    )


@router.get("/chat")
async def chat_home(request: Request, who: User) -> Response:
    return _chat_page(request, console_of(request), who)


@router.get("/chat/{conv_id}")
async def chat_view(conv_id: str, request: Request, who: User) -> Response:
    return _chat_page(request, console_of(request), who, conv_id)


@router.post("/chat")
async def chat_new(request: Request, who: User, form: UserForm) -> Response:
    """Start a conversation with its first question (streamed to JS, or answered whole and redirected)."""
    console = console_of(request)
    model = str(form.get("model") or "")
    try:
        question = check_question(str(form.get("message") or ""))
        if model not in {m.id for m in chat_models(console, who)}:
            raise InvalidRequest(f"choose one of your models (not '{model}')", param="model")
    except GarrisonError as exc:
        return _chat_page(request, console, who, error=exc.message, status=exc.status)
    conv = console.conversations.start(who.user.id, model, question)
    try:
        return await ask(request, console, who, conv, question, new=True)
    except GarrisonError:
        console.conversations.delete(who.user.id, conv.id)  # refused (quota, policy): keep no empty thread
        raise


@router.post("/chat/{conv_id}")
async def chat_continue(conv_id: str, request: Request, who: User, form: UserForm) -> Response:
    console = console_of(request)
    conv = console.conversations.get(who.user.id, conv_id)
    try:
        question = check_question(str(form.get("message") or ""))
    except GarrisonError as exc:
        return _chat_page(request, console, who, conv_id, error=exc.message, status=exc.status)
    return await ask(request, console, who, conv, question)


@router.post("/chat/{conv_id}/delete")
async def chat_delete(conv_id: str, request: Request, who: User, form: UserForm) -> Response:
    console_of(request).conversations.delete(who.user.id, conv_id)
    return RedirectResponse(f"{CONSOLE_PATH}/chat", status_code=303)


def _keys_page(request: Request, who: SignedIn, *, issued: Any = None, error: str | None = None,
               status: int = 200) -> Response:
    console = console_of(request)
    now = console.security.guard.clock()
    keys = [k.to_dict(now) for k in console.users.keys_of(who.user.id, console.security.keys)]
    own_scopes = [s for s in SCOPES if s in who.user.scopes]
    clearances = CLEARANCES[: CLEARANCES.index(who.user.clearance) + 1]
    return console.page(
        "keys.html", request, who, status=status, keys=keys, issued=issued, error=error,
        scopes=own_scopes, clearances=clearances,
    )


@router.get("/keys")
async def keys_page(request: Request, who: User) -> Response:
    return _keys_page(request, who)


@router.post("/keys")
async def keys_create(request: Request, who: User, form: UserForm) -> Response:
    """A personal API key within the user's own scopes, models, clearance and limits."""
    console = console_of(request)
    now = console.security.guard.clock()
    try:
        scopes = checked_scopes(form)
        if not scopes:
            raise InvalidRequest("choose at least one scope", param="scopes")
        models = [m.strip() for m in str(form.get("models") or "*").split(",") if m.strip()]
        issued = console.users.create_key(
            who.user, console.security.keys, name=str(form.get("name") or ""), scopes=scopes, models=models,
            clearance=str(form.get("clearance") or "public"), limits=Limits(),
            expires_at=expiry(form, now),
        )
    except GarrisonError as exc:
        return _keys_page(request, who, error=exc.message, status=exc.status)
    get_context(request).reason = f"console: {who.user.username} created personal key {issued.record.id}"
    return _keys_page(request, who, issued=issued.to_dict(now), status=201)


@router.post("/keys/{key_id}/revoke")
async def keys_revoke(key_id: str, request: Request, who: User, form: UserForm) -> Response:
    console = console_of(request)
    if key_id not in {k.id for k in console.users.keys_of(who.user.id, console.security.keys)}:
        return _keys_page(request, who, error=f"you have no key '{key_id}'", status=404)
    console.security.keys.revoke(key_id)
    get_context(request).reason = f"console: {who.user.username} revoked personal key {key_id}"
    return RedirectResponse(f"{CONSOLE_PATH}/keys", status_code=303)
