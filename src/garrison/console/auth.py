"""Console sign-in: who is signed in (session cookie), CSRF tokens, login throttling, and the sign-in routes.

Every sign-in, failure and sign-out is the audit record of its own HTTP request: the routes here fill the
request context (principal, decision, reason) that the request-context middleware chains into the log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import secrets
import threading
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from garrison.api.context import get_context
from garrison.console.sessions import Session, derive_key, sign, unsign
from garrison.console.web import CONSOLE_PATH, ConsoleRoute, SignInRequired
from garrison.errors import GarrisonError, PermissionDenied, RateLimited, Unauthenticated
from garrison.security.principal import SCOPES
from garrison.security.users import UserRecord
from garrison.store.times import Clock, parse_expiry

if TYPE_CHECKING:
    from garrison.console.app import Console

log = logging.getLogger("garrison.console")

SESSION_COOKIE = "garrison_session"
CSRF_COOKIE = "garrison_csrf"
PRE_SESSION_COOKIE = "garrison_pre"
OIDC_COOKIE = "garrison_oidc"
CSRF_FIELD = "csrf_token"
_OIDC_FLOW_MAX_AGE_S = 600

router = APIRouter(prefix=CONSOLE_PATH, include_in_schema=False, route_class=ConsoleRoute)


class CsrfRejected(PermissionDenied):
    """A form arrived without the CSRF token of the sender's session (403)."""

    code = "csrf_token_invalid"


class LoginThrottle:
    """Failed sign-ins counted per username and per client address in a sliding window (this process)."""

    def __init__(self, per_user: int, per_client: int, window_s: float, clock: Clock) -> None:
        self.per_user, self.per_client, self.window_s, self.clock = per_user, per_client, window_s, clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, username: str, client: str | None) -> None:
        """Raise RateLimited (with how long to wait) when this username or address failed too often."""
        now = self.clock()
        with self._lock:
            for key, limit, what in self._keys(username, client):
                times = self._recent(key, now)
                if len(times) >= limit:
                    wait = max(1.0, times[0] + self.window_s - now)
                    raise RateLimited(
                        f"too many failed sign-ins for this {what}; try again in {math.ceil(wait / 60)} min",
                        retry_after=wait,
                        code="login_throttled",
                    )

    def failed(self, username: str, client: str | None) -> None:
        now = self.clock()
        with self._lock:
            for key, _, _ in self._keys(username, client):
                self._recent(key, now).append(now)

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._failures.pop(f"user:{username.strip().lower()}", None)

    def _keys(self, username: str, client: str | None) -> list[tuple[str, int, str]]:
        keys = [(f"user:{username.strip().lower()}", self.per_user, "username")]
        if client:
            keys.append((f"client:{client}", self.per_client, "address"))
        return keys

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times


@dataclass(frozen=True, slots=True)
class SignedIn:
    """The person behind a console request and the session (and CSRF token) it came with."""

    user: UserRecord
    session: Session
    csrf: str


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def csrf_for(console: Console, binding: str) -> str:
    """The CSRF token bound to a session id (or a pre-session id on the sign-in page)."""
    return hmac.new(console.csrf_key, binding.encode(), hashlib.sha256).hexdigest()


def signed_in(request: Request) -> SignedIn:
    """The live session's user; SignInRequired otherwise. Puts the user's principal on the request context."""
    console = console_of(request)
    session = console.sessions.resume(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise SignInRequired("sign in to use the console")
    user = console.users.get(session.user_id)
    if not user.active:
        console.sessions.end(session.session_id)
        raise SignInRequired("this account is disabled")
    get_context(request).principal = user.principal()
    return SignedIn(user, session, csrf_for(console, session.session_id))


def admin_signed_in(request: Request) -> SignedIn:
    """A signed-in admin (403 for other users)."""
    who = signed_in(request)
    if not who.user.is_admin:
        error = PermissionDenied("the administration pages are for the admin role")
        get_context(request).deny(error.message)
        raise error
    return who


User = Annotated[SignedIn, Depends(signed_in)]
AdminUser = Annotated[SignedIn, Depends(admin_signed_in)]


async def check_csrf(request: Request, binding: str | None) -> dict[str, Any]:
    """The submitted form, once its CSRF token matches both the cookie and the session it is bound to."""
    console = console_of(request)
    form = await request.form()
    sent, cookie = form.get(CSRF_FIELD), request.cookies.get(CSRF_COOKIE)
    expected = csrf_for(console, binding) if binding else None
    if not (
        isinstance(sent, str) and cookie and expected
        and hmac.compare_digest(sent, cookie) and hmac.compare_digest(sent, expected)
    ):
        error = CsrfRejected("the form's security token is missing or stale; reload the page and try again")
        get_context(request).deny(error.message)
        raise error
    return {k: v for k, v in form.multi_items()}


async def user_form(request: Request, who: User) -> AsyncIterator[dict[str, Any]]:
    """A signed-in user's CSRF-checked form; its uploaded files are closed once the response is sent."""
    try:
        yield await check_csrf(request, who.session.session_id)
    finally:
        await request.close()


async def admin_form(request: Request, who: AdminUser) -> AsyncIterator[dict[str, Any]]:
    """An admin's CSRF-checked form; its uploaded files are closed once the response is sent."""
    try:
        yield await check_csrf(request, who.session.session_id)
    finally:
        await request.close()


UserForm = Annotated[dict[str, Any], Depends(user_form)]
AdminForm = Annotated[dict[str, Any], Depends(admin_form)]


def checked_scopes(form: dict[str, Any]) -> list[str]:
    """The scopes ticked in a key or user form (`scope_<name>` checkboxes)."""
    return [s for s in SCOPES if form.get(f"scope_{s}")]


def expiry(form: dict[str, Any], now: float) -> float | None:
    """A form's `expires` field (30d, or a date) as epoch seconds; None when empty."""
    text = str(form.get("expires") or "").strip()
    return parse_expiry(text, now) if text else None


def set_cookie(
    request: Request, response: Response, name: str, value: str, *, max_age: int | None = None,
    same_site: str = "strict", path: str = CONSOLE_PATH,
) -> None:
    """Every console cookie: HttpOnly, SameSite (Strict unless said), Secure over TLS (or as configured)."""
    mode = console_of(request).settings.console.secure_cookies
    secure = mode == "always" or (mode == "auto" and request.url.scheme == "https")
    response.set_cookie(
        name, value, max_age=max_age, path=path, secure=secure, httponly=True,
        samesite=same_site,  # type: ignore[arg-type]
    )


def _safe_next(target: str | None) -> str:
    """Only a path inside the console may be a post-sign-in destination (no open redirect)."""
    if target and target.startswith(CONSOLE_PATH + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{CONSOLE_PATH}/chat"


def _pre_session(request: Request) -> str:
    value = request.cookies.get(PRE_SESSION_COOKIE)
    return value if value and len(value) == 43 else secrets.token_urlsafe(32)


def login_page(request: Request, *, error: str | None = None, status: int = 200, username: str = "") -> HTMLResponse:
    """The sign-in form, with a CSRF token bound to a pre-session cookie."""
    console = console_of(request)
    pre = _pre_session(request)
    token = csrf_for(console, f"pre:{pre}")
    html = console.render(
        "login.html", request, None, error=error, username=username, csrf=token,
        next=_safe_next(request.query_params.get("next")),
        oidc_label=console.oidc.label if console.oidc else None,
    )
    response = HTMLResponse(html, status_code=status)
    set_cookie(request, response, PRE_SESSION_COOKIE, pre, max_age=3600)
    set_cookie(request, response, CSRF_COOKIE, token, max_age=3600)
    return response


def start_session(request: Request, user: UserRecord, how: str, response: Response) -> None:
    """Open a session for `user` on `response` and make this request's audit record the sign-in."""
    console = console_of(request)
    ctx = get_context(request)
    session, cookie = console.sessions.start(user.id, ctx.client)
    console.users.signed_in(user.id)
    console.throttle.succeeded(user.username)
    ctx.principal = user.principal()
    ctx.reason = f"console sign-in ({how}): {user.username}"
    set_cookie(request, response, SESSION_COOKIE, cookie, max_age=int(console.sessions.lifetime_s))
    set_cookie(request, response, CSRF_COOKIE, csrf_for(console, session.session_id))
    response.delete_cookie(PRE_SESSION_COOKIE, path=CONSOLE_PATH)


def refuse_sign_in(request: Request, username: str, reason: str) -> None:
    """Count a failed sign-in and make this request's audit record say so."""
    console = console_of(request)
    ctx = get_context(request)
    console.throttle.failed(username, ctx.client)
    ctx.deny(f"console sign-in failed for '{username[:64]}': {reason}")


@router.get("/login")
async def login_form(request: Request) -> Response:
    if console_of(request).sessions.resume(request.cookies.get(SESSION_COOKIE)) is not None:
        return RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303)
    return login_page(request)


@router.post("/login")
async def login(request: Request) -> Response:
    """Local sign-in: throttled, CSRF-checked, audited whatever the outcome."""
    console = console_of(request)
    ctx = get_context(request)
    form = await request.form()
    username = str(form.get("username") or "").strip()
    password = str(form.get("password") or "")
    try:
        pre = request.cookies.get(PRE_SESSION_COOKIE)
        await check_csrf(request, f"pre:{pre}" if pre else None)
        console.throttle.check(username, ctx.client)
    except GarrisonError as exc:
        ctx.deny(f"console sign-in refused for '{username[:64]}': {exc.message}")
        return login_page(request, error=exc.message, status=exc.status, username=username)
    user = None
    if username and password:  # one Argon2 verify (a tenth of a second of CPU): off the event loop
        user = await anyio.to_thread.run_sync(console.users.authenticate, console.security.env, username, password)
    if user is None:
        refuse_sign_in(request, username, "wrong username or password, or the account is disabled")
        return login_page(request, error="Wrong username or password.", status=401, username=username)
    response = RedirectResponse(_safe_next(str(form.get("next") or "")), status_code=303)
    start_session(request, user, "local", response)
    return response


@router.post("/logout")
async def logout(request: Request, who: User) -> Response:
    """Sign out: the session is revoked server-side, so its cookie is worthless from now on."""
    await check_csrf(request, who.session.session_id)
    console = console_of(request)
    console.sessions.end(who.session.session_id)
    get_context(request).reason = f"console sign-out: {who.user.username}"
    response = RedirectResponse(f"{CONSOLE_PATH}/login", status_code=303)
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, path=CONSOLE_PATH)
    return response


@router.get("/login/oidc")
async def oidc_start(request: Request) -> Response:
    """Begin single sign-on: state, nonce and PKCE verifier go into a short-lived signed cookie."""
    console = console_of(request)
    if console.oidc is None:
        return login_page(request, error="Single sign-on is not configured.", status=404)
    try:
        url, flow = await console.oidc.authorization_url(_redirect_uri(request))
    except GarrisonError as exc:
        get_context(request).deny(f"single sign-on unavailable: {exc.message}")
        return login_page(request, error=f"Single sign-on is unavailable: {exc.message}", status=502)
    flow["next"] = _safe_next(request.query_params.get("next"))
    flow["t"] = console.sessions.clock()
    response = RedirectResponse(url, status_code=303)
    # Lax, not Strict: the provider's redirect back is a cross-site navigation that must carry this cookie.
    set_cookie(request, response, OIDC_COOKIE, _seal(console, flow), max_age=_OIDC_FLOW_MAX_AGE_S,
               same_site="lax", path=f"{CONSOLE_PATH}/oidc")
    return response


@router.get("/oidc/callback")
async def oidc_callback(request: Request) -> Response:
    """Finish single sign-on: check state, redeem the code with the verifier, verify the ID token, sign in."""
    console = console_of(request)
    flow = _unseal(console, request.cookies.get(OIDC_COOKIE))
    params = dict(request.query_params)
    username = "(single sign-on)"
    try:
        if console.oidc is None:
            raise Unauthenticated("single sign-on is not configured")
        if flow is None or console.sessions.clock() - float(flow.get("t", 0)) > _OIDC_FLOW_MAX_AGE_S:
            raise Unauthenticated("the sign-in took too long or did not start here; start again")
        if "error" in params:
            raise Unauthenticated(f"the provider refused: {params.get('error_description') or params['error']}")
        if not hmac.compare_digest(str(params.get("state", "")), str(flow["state"])):
            raise Unauthenticated("the sign-in state does not match; start again")
        identity = await console.oidc.finish(params, flow, _redirect_uri(request))
        username = identity.username
        grants = console.oidc.grants(identity.claims)
        user = console.users.provision(
            console.security.env, identity.subject, identity.username, identity.display_name, grants
        )
        if not user.active:
            raise Unauthenticated("this account is disabled")
    except GarrisonError as exc:
        refuse_sign_in(request, username, exc.message)
        response = login_page(request, error=f"Single sign-on failed: {exc.message}", status=401)
        response.delete_cookie(OIDC_COOKIE, path=f"{CONSOLE_PATH}/oidc")
        return response
    target = _safe_next(str(flow.get("next") or ""))
    # A same-site hop: a Strict session cookie set on a cross-site redirect chain would not be sent at once.
    response = HTMLResponse(console.render("continue.html", request, None, target=target))
    start_session(request, user, "oidc", response)
    response.delete_cookie(OIDC_COOKIE, path=f"{CONSOLE_PATH}/oidc")
    return response


def _redirect_uri(request: Request) -> str:
    console = console_of(request)
    configured = console.oidc.redirect_url if console.oidc else None
    return configured or str(request.url_for("oidc_callback"))


def _seal(console: Console, flow: dict[str, Any]) -> str:
    raw = base64.urlsafe_b64encode(json.dumps(flow, separators=(",", ":")).encode()).decode()
    return sign(derive_key(console.secret, "oidc flow"), raw)


def _unseal(console: Console, cookie: str | None) -> dict[str, Any] | None:
    raw = unsign(derive_key(console.secret, "oidc flow"), cookie)
    if raw is None:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(raw.encode()))
    except ValueError:
        return None
    return value if isinstance(value, dict) and "state" in value else None
