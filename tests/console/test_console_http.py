"""The console's HTTP layer over a scripted engine: sessions, CSRF, throttling, audit, roles, keys, chat."""

from __future__ import annotations

import json

import httpx
from tests.console.conftest import PASSWORD, ConsoleApp, csrf_of, sign_in


def _records(app: ConsoleApp) -> list[dict]:  # type: ignore[type-arg]
    return app.security.audit.query(limit=None)


async def test_sign_in_sets_a_strict_http_only_session_and_is_audited(console_app: ConsoleApp) -> None:
    console_app.add_user("alice")
    async with console_app.client() as http:
        response = await sign_in(http, "alice")
        assert response.status_code == 303 and response.headers["location"] == "/console/chat"
        cookies = response.headers.get_list("set-cookie")
        session = next(c for c in cookies if c.startswith("garrison_session="))
        assert "HttpOnly" in session and "SameSite=strict" in session and "Path=/console" in session
        assert "Secure" not in session  # plain http here; Secure is set over TLS
        page = await http.get("/console/chat")
        assert page.status_code == 200 and "alice" in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
    sign_ins = [r for r in _records(console_app) if r["route"] == "/console/login" and r["method"] == "POST"]
    assert sign_ins[-1]["decision"] == "allow" and sign_ins[-1]["reason"] == "console sign-in (local): alice"
    assert sign_ins[-1]["key_name"] == "user:alice"
    assert console_app.security.audit.verify().ok


async def test_wrong_password_is_refused_audited_and_throttled(console_app: ConsoleApp) -> None:
    console_app.add_user("bob")
    limit = console_app.console.settings.console.login_failures_per_user
    async with console_app.client() as http:
        for _ in range(limit):
            response = await sign_in(http, "bob", "wrong password!!")
            assert response.status_code == 401 and "Wrong username or password" in response.text
        throttled = await sign_in(http, "bob")  # even the right password waits now
        assert throttled.status_code == 429 and "too many failed sign-ins" in throttled.text
        console_app.clock.now += console_app.console.settings.console.login_window_s + 1
        assert (await sign_in(http, "bob")).status_code == 303
    failures = [r for r in _records(console_app) if r["route"] == "/console/login" and r["decision"] == "deny"]
    assert len(failures) == limit + 1
    assert "console sign-in failed for 'bob'" in failures[0]["reason"]


async def test_unknown_user_and_disabled_user_cannot_sign_in(console_app: ConsoleApp) -> None:
    user = console_app.add_user("carol")
    console_app.console.users.disable(user.id)
    async with console_app.client() as http:
        assert (await sign_in(http, "carol")).status_code == 401
        assert (await sign_in(http, "nobody")).status_code == 401


async def test_a_form_without_the_session_csrf_token_is_refused(console_app: ConsoleApp) -> None:
    console_app.add_user("dave")
    async with console_app.client() as http:
        await sign_in(http, "dave")
        page = await http.get("/console/chat")
        token = csrf_of(page.text)
        for bad in ("", "0" * 64, token[:-1] + ("0" if token[-1] != "0" else "1")):
            response = await http.post("/console/chat", data={"model": "fake", "message": "hi", "csrf_token": bad})
            assert response.status_code == 403 and "security token" in response.text
        assert console_app.engine.requests == []
        ok = await http.post("/console/chat", data={"model": "fake", "message": "hi", "csrf_token": token})
        assert ok.status_code == 303


async def test_a_token_bound_to_another_session_is_refused(console_app: ConsoleApp) -> None:
    console_app.add_user("erin")
    console_app.add_user("frank")
    async with console_app.client() as erin, console_app.client() as frank:
        await sign_in(erin, "erin")
        await sign_in(frank, "frank")
        erin_token = csrf_of((await erin.get("/console/chat")).text)
        frank.cookies.set("garrison_csrf", erin_token, path="/console")  # double-submit of a foreign token
        response = await frank.post("/console/chat", data={"model": "fake", "message": "x", "csrf_token": erin_token})
        assert response.status_code == 403


async def test_idle_session_expires_and_sign_out_revokes_server_side(console_app: ConsoleApp) -> None:
    console_app.add_user("gina")
    async with console_app.client() as http:
        await sign_in(http, "gina")
        console_app.clock.now += 599
        assert (await http.get("/console/chat")).status_code == 200
        console_app.clock.now += 601
        expired = await http.get("/console/chat")
        assert expired.status_code == 303 and expired.headers["location"].startswith("/console/login")
        await sign_in(http, "gina")
        stolen = http.cookies.get("garrison_session")
        token = csrf_of((await http.get("/console/chat")).text)
        assert (await http.post("/console/logout", data={"csrf_token": token})).status_code == 303
    async with console_app.client() as thief:
        thief.cookies.set("garrison_session", stolen or "", path="/console")
        assert (await thief.get("/console/chat")).status_code == 303
    reasons = [r["reason"] for r in _records(console_app)]
    assert "console sign-out: gina" in reasons


async def test_a_forged_session_cookie_is_refused(console_app: ConsoleApp) -> None:
    async with console_app.client() as http:
        http.cookies.set("garrison_session", "abc.def", path="/console")
        assert (await http.get("/console/admin/users")).status_code == 303


async def test_chat_streams_as_the_user_and_is_audited_and_charged(console_app: ConsoleApp) -> None:
    user = console_app.add_user("hank")
    async with console_app.client() as http:
        await sign_in(http, "hank")
        token = csrf_of((await http.get("/console/chat")).text)
        response = await http.post("/console/chat", data={"model": "fake", "message": "Say hello", "csrf_token": token},
                                   headers={"accept": "text/event-stream"})
        assert response.status_code == 200
        frames = [f for f in response.text.split("\n\n") if f]
        assert frames[0].startswith("event: meta")
        deltas = [json.loads(f[6:])["delta"] for f in frames if f.startswith('data: {"delta"')]
        assert "".join(deltas) == "Hello!" and frames[-1] == "data: [DONE]"
        conv_id = json.loads(frames[0].split("data: ", 1)[1])["conversation"]
        page = await http.get(f"/console/chat/{conv_id}")
        assert "Say hello" in page.text and "Hello!" in page.text
    record = [r for r in _records(console_app) if r["route"] == "/console/chat"][-1]
    assert record["key_id"] == user.principal_id and record["model"] == "fake"
    assert (record["prompt_tokens"], record["completion_tokens"]) == (7, 3)
    usage = console_app.security.usage.rows(key_id=user.principal_id)
    assert usage[0].total_tokens == 10


async def test_chat_without_javascript_answers_whole_and_redirects(console_app: ConsoleApp) -> None:
    console_app.add_user("ida")
    async with console_app.client() as http:
        await sign_in(http, "ida")
        token = csrf_of((await http.get("/console/chat")).text)
        response = await http.post("/console/chat", data={"model": "fake", "message": "Hi", "csrf_token": token})
        assert response.status_code == 303
        page = await http.get(response.headers["location"])
        assert "Hello!" in page.text


async def test_model_outside_the_users_models_is_refused(console_app: ConsoleApp) -> None:
    console_app.add_user("jay", models=("other",))
    async with console_app.client() as http:
        await sign_in(http, "jay")
        page = await http.get("/console/chat")
        assert "not allowed any chat model" in page.text
        form = {"model": "fake", "message": "x", "csrf_token": csrf_of(page.text)}
        response = await http.post("/console/chat", data=form)
        assert response.status_code == 400
    assert console_app.engine.requests == []


async def test_conversations_are_private_and_deletable(console_app: ConsoleApp) -> None:
    console_app.add_user("kim")
    console_app.add_user("lee")
    async with console_app.client() as kim, console_app.client() as lee:
        await sign_in(kim, "kim")
        await sign_in(lee, "lee")
        token = csrf_of((await kim.get("/console/chat")).text)
        created = await kim.post("/console/chat", data={"model": "fake", "message": "kim secret", "csrf_token": token})
        url = created.headers["location"]
        assert (await lee.get(url)).status_code == 404
        assert "kim secret" not in (await lee.get("/console/chat")).text
        assert (await kim.post(f"{url}/delete", data={"csrf_token": token})).status_code == 303
        assert (await kim.get(url)).status_code == 404


async def test_admin_pages_need_the_admin_role(console_app: ConsoleApp) -> None:
    console_app.add_user("mo")
    console_app.add_user("root", role="admin")
    async with console_app.client() as user, console_app.client() as admin:
        await sign_in(user, "mo")
        await sign_in(admin, "root")
        for page in ("users", "keys", "usage", "audit", "models"):
            assert (await user.get(f"/console/admin/{page}")).status_code == 403
            response = await admin.get(f"/console/admin/{page}")
            assert response.status_code == 200, page


async def test_admin_key_lifecycle_and_the_secret_is_shown_once(console_app: ConsoleApp) -> None:
    console_app.add_user("root", role="admin")
    async with console_app.client() as http:
        await sign_in(http, "root")
        token = csrf_of((await http.get("/console/admin/keys")).text)
        created = await http.post("/console/admin/keys", data={
            "name": "ci-bot", "scope_chat": "1", "models": "*", "clearance": "public", "csrf_token": token})
        assert created.status_code == 201
        secret = created.text.split('class="secret-value" type="text" readonly value="')[1].split('"')[0]
        key_id = secret.split("_")[2]
        assert secret.startswith("gsk_dev_") and secret not in (await http.get("/console/admin/keys")).text
        api = {"authorization": f"Bearer {secret}"}
        assert (await http.get("/v1/models", headers=api)).status_code == 200
        rotated = await http.post(f"/console/admin/keys/{key_id}/rotate", data={"csrf_token": token})
        new_secret = rotated.text.split('readonly value="')[1].split('"')[0]
        assert (await http.get("/v1/models", headers=api)).status_code == 401
        api = {"authorization": f"Bearer {new_secret}"}
        assert (await http.get("/v1/models", headers=api)).status_code == 200
        await http.post(f"/console/admin/keys/{key_id}/revoke", data={"csrf_token": token})
        assert (await http.get("/v1/models", headers=api)).status_code == 401


async def test_personal_keys_stay_within_the_users_permissions(console_app: ConsoleApp) -> None:
    user = console_app.add_user("nia", clearance="internal", scopes=("chat",))
    async with console_app.client() as http:
        await sign_in(http, "nia")
        token = csrf_of((await http.get("/console/keys")).text)
        too_much = await http.post("/console/keys", data={
            "name": "x", "scope_chat": "1", "scope_admin": "1", "models": "*", "clearance": "internal",
            "csrf_token": token})
        assert too_much.status_code == 403 and "admin" in too_much.text
        too_high = await http.post("/console/keys", data={
            "name": "x", "scope_chat": "1", "models": "*", "clearance": "restricted", "csrf_token": token})
        assert too_high.status_code == 403
        ok = await http.post("/console/keys", data={
            "name": "mine", "scope_chat": "1", "models": "*", "clearance": "internal", "csrf_token": token})
        assert ok.status_code == 201
    keys = console_app.console.users.keys_of(user.id, console_app.security.keys)
    assert [k.name for k in keys] == ["mine"] and keys[0].clearance == "internal"
    console_app.console.users.disable(user.id)
    assert console_app.security.keys.get(keys[0].id).revoked_at is not None


async def test_admin_disables_a_user_and_its_session_ends(console_app: ConsoleApp) -> None:
    console_app.add_user("root", role="admin")
    victim = console_app.add_user("otto")
    async with console_app.client() as admin, console_app.client() as user:
        await sign_in(admin, "root")
        await sign_in(user, "otto")
        assert (await user.get("/console/chat")).status_code == 200
        token = csrf_of((await admin.get("/console/admin/users")).text)
        await admin.post(f"/console/admin/users/{victim.id}/disable", data={"csrf_token": token})
        assert (await user.get("/console/chat")).status_code == 303


async def test_audit_verify_button_reports_the_chain(console_app: ConsoleApp) -> None:
    console_app.add_user("root", role="admin")
    async with console_app.client() as http:
        await sign_in(http, "root")
        token = csrf_of((await http.get("/console/admin/audit")).text)
        response = await http.post("/console/admin/audit/verify", data={"csrf_token": token})
        assert "audit log intact" in response.text
        filtered = await http.get("/console/admin/audit", params={"decision": "deny", "since": "not a date"})
        assert filtered.status_code == 200 and "is not a date" in filtered.text


async def test_usage_page_draws_svg_charts_per_user_and_key(console_app: ConsoleApp) -> None:
    console_app.add_user("root", role="admin")
    async with console_app.client() as http:
        await sign_in(http, "root")
        token = csrf_of((await http.get("/console/chat")).text)
        await http.post("/console/chat", data={"model": "fake", "message": "Hi", "csrf_token": token})
        page = await http.get("/console/admin/usage")
    assert page.text.count("<svg") >= 2 and "Tokens per day by user" in page.text
    assert "root: 10 tokens" in page.text
    assert "style=" not in page.text  # the CSP forbids inline styles


async def test_next_parameter_cannot_redirect_off_the_console(console_app: ConsoleApp) -> None:
    console_app.add_user("pat")
    async with console_app.client() as http:
        page = await http.get("/console/login", params={"next": "https://evil.example/"})
        response = await http.post("/console/login", data={
            "username": "pat", "password": PASSWORD, "csrf_token": csrf_of(page.text), "next": "//evil.example/"})
        assert response.headers["location"] == "/console/chat"


async def test_cookies_are_secure_over_tls(console_app: ConsoleApp) -> None:
    console_app.add_user("quin")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=console_app.app), base_url="https://test") as http:
        response = await sign_in(http, "quin")
    cookies = response.headers.get_list("set-cookie")
    assert all("Secure" in c for c in cookies if c.startswith(("garrison_session=", "garrison_csrf=")))


async def test_a_callback_that_did_not_start_here_is_refused_and_audited(console_app: ConsoleApp) -> None:
    async with console_app.client() as http:
        response = await http.get("/console/oidc/callback", params={"state": "x", "code": "y"})
    assert response.status_code == 401 and "Single sign-on failed" in response.text
    record = _records(console_app)[-1]
    assert record["route"] == "/console/oidc/callback" and record["decision"] == "deny"


async def test_password_hashing_runs_off_the_event_loop(console_app: ConsoleApp) -> None:
    """An Argon2 hash or verify takes a tenth of a second of CPU: sign-in, a new user and a password reset
    do it in a worker thread, so every other request (a token stream, say) goes on meanwhile."""
    import asyncio

    from argon2 import PasswordHasher

    def on_event_loop() -> bool:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False
        return True

    class Watched(PasswordHasher):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[tuple[str, bool]] = []

        def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
            self.calls.append(("hash", on_event_loop()))
            return super().hash(password, salt=salt)

        def verify(self, hash: str | bytes, password: str | bytes) -> bool:
            self.calls.append(("verify", on_event_loop()))
            return super().verify(hash, password)

    console_app.add_user("root", role="admin")
    watched = Watched()
    console_app.console.users._hasher = watched
    async with console_app.client() as http:
        assert (await sign_in(http, "root")).status_code == 303
        token = csrf_of((await http.get("/console/admin/users")).text)
        created = await http.post("/console/admin/users", data={
            "username": "pat", "password": "a long enough password", "scope_chat": "1", "csrf_token": token})
        assert created.status_code == 201
        pat = next(u for u in console_app.console.users.all("dev") if u.username == "pat")
        reset = await http.post(f"/console/admin/users/{pat.id}/reset", data={"csrf_token": token})
        assert reset.status_code == 200
    assert [kind for kind, _ in watched.calls] == ["verify", "hash", "hash"]
    assert not any(on_loop for _, on_loop in watched.calls), watched.calls
