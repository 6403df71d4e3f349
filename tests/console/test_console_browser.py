"""User journeys through the console in real Chromium, against the real server, model and OpenID provider.

Screenshots of each page go to $GARRISON_CONSOLE_SCREENSHOTS (docs/images/console for the docs).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from tests.console.browser import (
    element,
    event_stream_responses,
    oidc_provider,
    origin,
    requested_urls,
    require_tools,
    screenshot,
    start_chromium,
    wait_for,
)

from garrison.security.users import Grants

pytestmark = [pytest.mark.model, pytest.mark.browser]

PASSWORD = "a long test password"
CLIENT_ID, CLIENT_SECRET = "garrison-console", "provider-test-secret"
MODEL = "smollm2-135m-instruct"
PAGES = ("chat", "documents", "keys", "admin/users", "admin/keys", "admin/usage", "admin/audit", "admin/models")
SECRET, SECRET_TITLE = "zqcobaltfreeze", "Cobalt merger"  # only in the confidential document


@dataclass
class Site:
    base: str  # how the browser reaches garrison (localhost: another site than the provider's 127.0.0.1)
    api: str
    app: Any
    shots: Path
    files: Path

    @property
    def console(self) -> Any:
        return self.app.state.console


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A live server with document roots and a knowledge model, console users, short replies, and single
    sign-on at a real provider."""
    require_tools()
    from tests.conftest import TEST_THREADS

    from garrison.api.server import background_server, build
    from garrison.console.oidc import OidcClient
    from garrison.settings import OidcRule, OidcSettings, load_settings

    tmp = tmp_path_factory.mktemp("console-browser")
    for folder in ("handbook", "uploads"):
        (tmp / folder).mkdir()
    (tmp / "handbook" / "leave.md").write_text("# Annual leave\nEvery employee gets 25 days of paid vacation.")
    (tmp / "handbook" / "merger.md").write_text(
        f"---\nclassification: confidential\n---\n# {SECRET_TITLE}\nThe vacation freeze code is {SECRET}.")
    settings = load_settings(
        home=tmp / "home", host="127.0.0.1", port=0,
        engine={"threads": TEST_THREADS, "context_length": 2048, "max_queue": 32},
        auth={"enabled": True, "env": "dev"},
        documents={"roots": [
            {"path": str(tmp / "handbook"), "collection": "handbook", "label": "public"},
            {"path": str(tmp / "uploads"), "collection": "uploads", "label": "internal", "upload": True},
        ], "sync_interval": 0},
        knowledge=[{"id": "handbook", "model": MODEL, "collections": ["handbook", "uploads"], "k": 3}],
    )
    settings.ensure_home()
    app = build(settings)
    app.state.documents.sync()
    console = app.state.console
    console.settings.console.max_tokens = 40
    users = console.users
    writer = ("chat", "completions", "embeddings", "documents", "documents:write")
    users.create(username="ada", env="dev", password=PASSWORD, display_name="Ada Admin",
                 grants=Grants(role="admin", scopes=(*writer, "admin"), clearance="restricted"))
    users.create(username="pete", env="dev", password=PASSWORD,
                 grants=Grants(role="user", scopes=writer, clearance="public"))
    with background_server(settings, app) as url:
        base = url.replace("127.0.0.1", "localhost")
        people = {"carol": {"preferred_username": "carol", "name": "Carol Sso", "email": "carol@example.test",
                            "groups": ["staff", "garrison-admins"]}}
        with oidc_provider(tmp, redirect_uri=f"{base}/console/oidc/callback", client_id=CLIENT_ID,
                           client_secret=CLIENT_SECRET, users=people) as issuer:
            console.oidc = OidcClient(OidcSettings(
                issuer=issuer, client_id=CLIENT_ID, redirect_url=f"{base}/console/oidc/callback",
                scopes=["openid", "profile", "email", "groups"], label="Sign in with the test provider",
                rules=[OidcRule(claim="groups", value="garrison-admins", role="admin", clearance="confidential")],
            ), client_secret=CLIENT_SECRET)
            try:
                yield Site(base=base, api=url, app=app, shots=tmp / "shots", files=tmp / "files")
            finally:
                console.oidc = None


@pytest.fixture(scope="module")
def browser(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def driver(browser: WebDriver, site: Site) -> WebDriver:
    """The module's browser, signed out, with JavaScript on and an empty network log."""
    browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})
    browser.get(f"{site.base}/console/login")
    browser.delete_all_cookies()
    requested_urls(browser)
    browser.get_log("browser")
    return browser


def sign_in(driver: WebDriver, site: Site, username: str, password: str = PASSWORD) -> None:
    driver.get(f"{site.base}/console/login")
    element(driver, "#username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "form.stack button[type=submit]").click()


def signed_in_as(driver: WebDriver, username: str) -> None:
    wait_for(driver, ec.text_to_be_present_in_element((By.ID, "signed-in-as"), username))


def ask(driver: WebDriver, question: str, model: str | None = None) -> Any:
    if model is not None:
        element(driver, f"#model option[value='{model}']").click()
    box = element(driver, "#message")
    box.send_keys(question)
    driver.find_element(By.CSS_SELECTOR, "#chat-form button[type=submit]").click()
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant[data-done]"))
    return driver.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1]


def audit_rows(site: Site) -> list[dict[str, Any]]:
    return site.app.state.security.audit.query(limit=None)


def test_local_user_signs_in_after_a_wrong_password(driver: WebDriver, site: Site) -> None:
    screenshot(driver, "login", site.shots)
    sign_in(driver, site, "pete", "not the password")
    assert "Wrong username or password" in element(driver, ".alert").text
    sign_in(driver, site, "pete")
    signed_in_as(driver, "pete")
    assert driver.current_url == f"{site.base}/console/chat"
    cookie = driver.get_cookie("garrison_session")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert driver.execute_script("return document.cookie").find("garrison_session") == -1
    reasons = [(r["decision"], r["reason"]) for r in audit_rows(site)]
    assert ("allow", "console sign-in (local): pete") in reasons
    assert any(d == "deny" and "console sign-in failed for 'pete'" in (why or "") for d, why in reasons)


def test_sign_in_through_the_real_openid_provider(driver: WebDriver, site: Site) -> None:
    driver.get(f"{site.base}/console/login")
    element(driver, "#oidc-sign-in").click()
    wait_for(driver, lambda d: d.current_url.startswith(site.console.oidc.settings.issuer))
    element(driver, "input[name=login]").send_keys("carol")
    driver.find_element(By.CSS_SELECTOR, "input[name=password]").send_keys("anything")
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    signed_in_as(driver, "Carol Sso")
    assert driver.current_url == f"{site.base}/console/chat"
    assert "admin · confidential" in driver.find_element(By.ID, "signed-in-as").text  # the groups rule applied
    assert driver.find_elements(By.LINK_TEXT, "Users")
    carol = site.console.users.find("dev", "carol")
    assert carol.source == "oidc" and carol.subject.endswith("|carol") and carol.clearance == "confidential"
    assert any(r["reason"] == "console sign-in (oidc): carol" for r in audit_rows(site))


def test_question_is_answered_as_a_stream_and_audited_as_the_user(driver: WebDriver, site: Site) -> None:
    sign_in(driver, site, "pete")
    signed_in_as(driver, "pete")
    driver.execute_script(
        "window.__updates = 0; new MutationObserver(() => window.__updates++)"
        ".observe(document.getElementById('messages'), {subtree: true, characterData: true, childList: true});"
    )
    driver.get_log("performance")
    answer = ask(driver, "Name a colour of the sky.")
    text = answer.find_element(By.CSS_SELECTOR, ".text").text
    assert answer.get_attribute("data-done") == "true" and text.strip()
    assert driver.execute_script("return window.__updates") > 3  # the answer grew piece by piece
    assert any("/console/chat" in url for url in event_stream_responses(driver.get_log("performance")))
    assert "Answered (" in driver.find_element(By.ID, "chat-status").text
    screenshot(driver, "chat", site.shots)
    request_id = answer.get_attribute("data-request-id")
    admitted, finished = [r for r in audit_rows(site) if r["request_id"] == request_id]
    assert (admitted["event"], finished["event"]) == ("request.admitted", "request.finished")
    record = finished
    pete = site.console.users.find("dev", "pete")
    assert record["key_id"] == pete.principal_id and record["route"] == "/console/chat"
    assert record["completion_tokens"] > 0 and record["model"] == MODEL


def test_conversations_are_listed_kept_and_deleted(driver: WebDriver, site: Site) -> None:
    sign_in(driver, site, "pete")
    signed_in_as(driver, "pete")
    ask(driver, "Say one word about trees.")
    url = driver.current_url
    assert "/console/chat/" in url
    driver.get(f"{site.base}/console/chat")
    link = element(driver, f".conv-list a[href='{url.removeprefix(site.base)}']")
    assert "trees" in link.text
    link.click()
    assert "Say one word about trees." in element(driver, ".msg.user .text").text
    driver.find_element(By.CSS_SELECTOR, ".conv-list [aria-current=page] + form button").click()
    wait_for(driver, ec.url_to_be(f"{site.base}/console/chat"))
    assert not driver.find_elements(By.CSS_SELECTOR, f".conv-list a[href='{url.removeprefix(site.base)}']")


def test_admin_creates_rotates_and_revokes_a_key_that_then_stops_working(driver: WebDriver, site: Site) -> None:
    sign_in(driver, site, "ada")
    signed_in_as(driver, "Ada")
    driver.get(f"{site.base}/console/admin/keys")
    element(driver, "#k-name").send_keys("reporting-bot")
    driver.find_element(By.CSS_SELECTOR, "#new-key ~ form button[type=submit]").click()
    secret = element(driver, "#secret-value").get_attribute("value") or ""
    screenshot(driver, "admin-keys", site.shots)
    key_id = secret.split("_")[2]
    api = httpx.Client(base_url=site.api, timeout=60)
    assert api.get("/v1/models", headers={"authorization": f"Bearer {secret}"}).status_code == 200
    driver.find_element(By.CSS_SELECTOR, f"#key-{key_id} button[aria-label^=Rotate]").click()
    rotated = wait_for(driver, lambda d: (v := d.find_element(By.ID, "secret-value").get_attribute("value")) != secret
                       and v)
    assert rotated.split("_")[2] == key_id
    assert api.get("/v1/models", headers={"authorization": f"Bearer {secret}"}).status_code == 401
    assert api.get("/v1/models", headers={"authorization": f"Bearer {rotated}"}).status_code == 200
    driver.find_element(By.CSS_SELECTOR, f"#key-{key_id} button[aria-label^=Revoke]").click()
    wait_for(driver, ec.text_to_be_present_in_element((By.CSS_SELECTOR, f"#key-{key_id} .status"), "revoked"))
    denied = api.get("/v1/models", headers={"authorization": f"Bearer {rotated}"})
    assert denied.status_code == 401 and "revoked" in denied.json()["error"]["message"]


def test_admin_creates_a_user_who_signs_in_and_is_disabled(driver: WebDriver, site: Site) -> None:
    sign_in(driver, site, "ada")
    signed_in_as(driver, "Ada")
    driver.get(f"{site.base}/console/admin/users")
    element(driver, "#u-username").send_keys("quinn")
    driver.find_element(By.ID, "u-password").send_keys("quinn's own passphrase")
    driver.find_element(By.CSS_SELECTOR, "#new-user ~ form button[type=submit]").click()
    wait_for(driver, ec.presence_of_element_located((By.CSS_SELECTOR, "button[aria-label='Disable quinn']")))
    screenshot(driver, "admin-users", site.shots)
    admin_cookies = driver.get_cookies()
    driver.delete_all_cookies()
    sign_in(driver, site, "quinn", "quinn's own passphrase")
    signed_in_as(driver, "quinn")
    quinn_cookies = driver.get_cookies()
    driver.delete_all_cookies()
    for cookie in admin_cookies:
        driver.add_cookie(cookie)
    driver.get(f"{site.base}/console/admin/users")
    element(driver, "button[aria-label='Disable quinn']").click()
    wait_for(driver, ec.presence_of_element_located((By.CSS_SELECTOR, "button[aria-label='Enable quinn']")))
    driver.delete_all_cookies()
    for cookie in quinn_cookies:
        driver.add_cookie(cookie)
    driver.get(f"{site.base}/console/chat")
    assert driver.current_url.startswith(f"{site.base}/console/login")


def test_audit_page_verifies_the_chain_and_filters(driver: WebDriver, site: Site) -> None:
    sign_in(driver, site, "nobody-at-all", "wrong password here")
    element(driver, ".alert")
    sign_in(driver, site, "ada")
    signed_in_as(driver, "Ada")
    driver.get(f"{site.base}/console/admin/audit")
    element(driver, "#verify-chain").click()
    result = element(driver, "#verify-result")
    assert result.text.startswith("audit log intact:") and "signatures verified" in result.text
    screenshot(driver, "admin-audit", site.shots)
    driver.find_element(By.ID, "a-decision").send_keys("deny")
    unfiltered = driver.find_element(By.CSS_SELECTOR, "table.audit")
    driver.find_element(By.CSS_SELECTOR, ".filters button").click()
    wait_for(driver, ec.staleness_of(unfiltered))  # the filtered page has replaced this one
    rows = wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "table.audit tbody tr.deny"))
    assert not driver.find_elements(By.CSS_SELECTOR, "table.audit tbody tr.allow")
    assert any("nobody-at-all" in row.text for row in rows)


def test_csrf_token_and_session_expiry_are_enforced(driver: WebDriver, site: Site) -> None:
    sign_in(driver, site, "pete")
    signed_in_as(driver, "pete")
    driver.execute_script("document.querySelector('.signout input[name=csrf_token]').value = 'forged'")
    driver.find_element(By.CSS_SELECTOR, ".signout button").click()
    assert "security token" in element(driver, ".alert").text
    driver.get(f"{site.base}/console/chat")
    signed_in_as(driver, "pete")  # the forged sign-out did nothing
    sessions = site.console.sessions
    idle = sessions.idle_timeout_s
    sessions.clock = lambda: time.time() + idle + 1
    try:
        driver.get(f"{site.base}/console/chat")
        assert driver.current_url.startswith(f"{site.base}/console/login")
    finally:
        sessions.clock = time.time
    sign_in(driver, site, "pete")
    signed_in_as(driver, "pete")
    stolen = driver.get_cookie("garrison_session")
    driver.find_element(By.CSS_SELECTOR, ".signout button").click()
    wait_for(driver, ec.url_contains("/console/login"))
    driver.add_cookie(stolen)  # the signed-out cookie, replayed
    driver.get(f"{site.base}/console/chat")
    assert driver.current_url.startswith(f"{site.base}/console/login")


def test_no_request_leaves_the_console_origin(driver: WebDriver, site: Site) -> None:
    sign_in(driver, site, "ada")
    signed_in_as(driver, "Ada")
    ask(driver, "Hello")
    for page in PAGES:
        driver.get(f"{site.base}/console/{page}")
        element(driver, "main h1")
    urls = [u for u in requested_urls(driver) if u.startswith(("http:", "https:", "ws:", "wss:"))]
    assert len(urls) > 15
    assert {origin(u) for u in urls} == {site.base}, sorted({origin(u) for u in urls})
    console_errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert console_errors == []  # no CSP violation, no script error, no failed load


def test_reading_pages_and_asking_work_without_javascript(driver: WebDriver, site: Site) -> None:
    driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
    sign_in(driver, site, "ada")
    signed_in_as(driver, "Ada")
    element(driver, "#message").send_keys("Reply with one word.")
    driver.find_element(By.CSS_SELECTOR, "#chat-form button[type=submit]").click()
    wait_for(driver, ec.url_contains("/console/chat/"))
    assert element(driver, ".msg.assistant .text").text.strip()
    for page, expect in (("admin/usage", "By user"), ("admin/audit", "Verify chain"),
                         ("admin/models", MODEL), ("documents", "Annual leave"), ("admin/keys", "Keys of dev")):
        driver.get(f"{site.base}/console/{page}")
        assert expect in element(driver, "main").text
        if page in ("admin/usage", "admin/models"):
            screenshot(driver, page.replace("/", "-"), site.shots)


def test_every_page_fits_375_px_and_every_field_has_a_label(driver: WebDriver, site: Site) -> None:
    sign_in(driver, site, "ada")
    signed_in_as(driver, "Ada")
    ask(driver, "Hi")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 375, "height": 812, "deviceScaleFactor": 1, "mobile": True})
    unlabelled_js = (
        "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]"
        ".filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.name || e.id)"
    )
    try:
        for page in PAGES:
            driver.get(f"{site.base}/console/{page}")
            element(driver, "main h1")
            width = driver.execute_script("return document.documentElement.scrollWidth")
            assert width <= 375, f"/console/{page} is {width} px wide at 375 px"
            assert driver.execute_script(unlabelled_js) == [], page
            nameless = driver.execute_script(
                "return [...document.querySelectorAll('button, a')].filter(e => !e.textContent.trim()"
                " && !e.getAttribute('aria-label')).length")
            assert nameless == 0, page
        driver.get(f"{site.base}/console/chat")
        element(driver, ".conv-list a").click()
        element(driver, ".msg.assistant")
        driver.save_screenshot(str(_shot_path(site, "chat-375px")))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def _shot_path(site: Site, name: str) -> Path:
    import os

    target = Path(os.environ.get("GARRISON_CONSOLE_SCREENSHOTS") or site.shots)
    target.mkdir(parents=True, exist_ok=True)
    return target / f"{name}.png"


def _upload(driver: WebDriver, site: Site, name: str, text: str, label: str | None = None) -> None:
    site.files.mkdir(exist_ok=True)
    path = site.files / name
    path.write_text(text)
    driver.get(f"{site.base}/console/documents")
    element(driver, "#d-file").send_keys(str(path))
    if label is not None:
        driver.find_element(By.CSS_SELECTOR, f"#d-label option[value='{label}']").click()
    driver.find_element(By.CSS_SELECTOR, "#upload-form button[type=submit]").click()


def test_upload_a_document_and_find_it_listed_searched_and_cited(driver: WebDriver, site: Site) -> None:
    sign_in(driver, site, "ada")
    signed_in_as(driver, "Ada")
    _upload(driver, site, "remote-work.md", "# Remote work policy\nStaff may work from home on Fridays; "
                                            "the remote work allowance is 40 euros a month.", label="internal")
    notice = element(driver, "#documents-notice")
    assert "Uploaded remote-work.md into uploads, labelled internal." in notice.text
    row = driver.find_element(By.XPATH, "//table[@class='documents']//tr[td[2]='Remote work policy']")
    assert row.find_element(By.CSS_SELECTOR, ".badge").text.lower() == "internal"
    assert SECRET_TITLE in driver.page_source  # ada is cleared for it
    screenshot(driver, "documents", site.shots)
    element(driver, "#q").send_keys("remote work allowance")
    driver.find_element(By.CSS_SELECTOR, "form[role=search] button").click()
    first = element(driver, ".hits li")
    assert "Remote work policy" in first.text
    assert first.find_element(By.CSS_SELECTOR, ".badge").text.lower() == "internal"
    driver.get(f"{site.base}/console/chat")
    answer = ask(driver, "What is the remote work allowance per month?", model="handbook")
    sources = answer.find_element(By.CSS_SELECTOR, ".citations")
    assert "Remote work policy" in sources.text
    assert answer.find_element(By.CSS_SELECTOR, ".badge[class*=label-]").text.lower() in ("internal", "confidential")
    screenshot(driver, "chat-citations", site.shots)
    driver.get(driver.current_url)  # the conversation keeps the citations and the badge
    kept = element(driver, ".msg.assistant .citations")
    assert "Remote work policy" in kept.text and "badge label-internal" in driver.page_source


def test_a_public_user_never_sees_a_confidential_document(driver: WebDriver, site: Site) -> None:
    sign_in(driver, site, "pete")
    signed_in_as(driver, "pete")
    sources = []
    driver.get(f"{site.base}/console/documents")
    assert "Annual leave" in element(driver, "table.documents").text
    sources.append(driver.page_source)
    element(driver, "#q").send_keys("vacation freeze code merger")
    driver.find_element(By.CSS_SELECTOR, "form[role=search] button").click()
    element(driver, "#hits-title")
    sources.append(driver.page_source)
    labels = [o.get_attribute("value") for o in driver.find_elements(By.CSS_SELECTOR, "#d-label option")]
    assert labels == ["", "public"]  # nothing above the clearance is offered
    _upload(driver, site, "leak.md", "---\nclassification: confidential\n---\n# Leak\nA confidential note.")
    assert "Upload refused" in element(driver, ".alert").text and "above the uploader's clearance" in \
        driver.find_element(By.CSS_SELECTOR, ".alert").text
    sources.append(driver.page_source)
    driver.get(f"{site.base}/console/chat")
    answer = ask(driver, "What is the vacation freeze code of the merger?", model="handbook")
    labels = [b.text.lower() for b in answer.find_elements(By.CSS_SELECTOR, ".citations .badge")]
    assert labels and set(labels) == {"public"}
    sources.append(driver.page_source)
    driver.get(driver.current_url)
    element(driver, ".msg.assistant .citations")
    sources.append(driver.page_source)
    driver.get(f"{site.base}/console/chat")
    sources.append(driver.page_source)
    for html in sources:
        assert SECRET not in html and SECRET_TITLE not in html and "merger.md" not in html
        assert "label-confidential" not in html and "label-restricted" not in html
    assert "Remote work policy" not in sources[0]  # the internal upload is beyond pete too
