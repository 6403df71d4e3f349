"""Helpers for the console's browser tests: Debian's Chromium under Selenium, the real OpenID provider."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PROVIDER_DIR = Path(__file__).parent / "oidc_provider"
WAIT_S = 120  # the upper bound of one wait (a real model answering on a loaded CI machine), never a sleep


def require_tools() -> None:
    """Fail (not skip) with the install step when the browser or the provider is missing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} missing: run `apt-get install -y chromium chromium-driver` "
                           "(make test does)")
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir() or shutil.which("node") is None:
        raise RuntimeError(f"the test OpenID provider is missing: run `npm ci` in {PROVIDER_DIR} (make test does)")


def start_chromium(profile: Path) -> WebDriver:
    """Headless Chromium with a fresh profile, no background traffic, and every non-loopback host unresolvable."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
        "--disable-extensions", "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,900",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT_S)
    return driver


def wait_for(driver: WebDriver, condition: Any, timeout: float = WAIT_S) -> Any:
    """Poll `condition` until it holds (elements replaced by a page load in between are looked up again)."""
    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(driver, timeout, ignored_exceptions=ignored).until(condition)


def element(driver: WebDriver, css: str) -> WebElement:
    found: WebElement = wait_for(driver, ec.presence_of_element_located((By.CSS_SELECTOR, css)))
    return found


def requested_urls(driver: WebDriver) -> list[str]:
    """Every URL the browser asked for since the last call (from the DevTools network log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def event_stream_responses(entries: list[dict[str, Any]]) -> list[str]:
    """URLs whose responses were served as text/event-stream, from raw performance log entries."""
    out = []
    for entry in entries:
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.responseReceived":
            response = message["params"]["response"]
            if response.get("mimeType") == "text/event-stream":
                out.append(response["url"])
    return out


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def screenshot(driver: WebDriver, name: str, fallback_dir: Path) -> Path:
    """Save a PNG of the whole page into $GARRISON_CONSOLE_SCREENSHOTS (docs/images/console) or a temp dir."""
    target = Path(os.environ.get("GARRISON_CONSOLE_SCREENSHOTS") or fallback_dir)
    target.mkdir(parents=True, exist_ok=True)
    width = driver.execute_script("return document.documentElement.clientWidth")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    metrics = {"width": width, "height": min(int(height), 2400), "deviceScaleFactor": 1, "mobile": width < 500}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        path = target / f"{name}.png"
        driver.save_screenshot(str(path))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return path


@contextmanager
def oidc_provider(tmp: Path, *, redirect_uri: str, client_id: str, client_secret: str,
                  users: dict[str, dict[str, Any]]) -> Iterator[str]:
    """Run npm oidc-provider on loopback with one client and these users; yields its issuer URL."""
    config = tmp / "provider.json"
    config.write_text(json.dumps({
        "host": "127.0.0.1", "client_id": client_id, "client_secret": client_secret,
        "redirect_uri": redirect_uri, "users": users,
    }))
    process = subprocess.Popen(
        ["node", str(PROVIDER_DIR / "provider.mjs"), str(config)], cwd=PROVIDER_DIR,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # blocks until the provider listens (or exits)
        if not line.startswith("ready "):
            raise RuntimeError(f"the OpenID provider did not start (exit {process.poll()})")
        yield line.split(" ", 1)[1].strip()
    finally:
        if process.stdin:
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
