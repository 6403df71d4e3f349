"""Run a suite against OpenAI-compatible targets: deterministic requests, bounded concurrency, retries."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from garrison import __version__
from garrison.errors import ConfigError, GarrisonError
from garrison.evals.checks import Verdict, run_checks
from garrison.evals.results import CaseResult, EvalRun, TargetResult
from garrison.evals.suite import Case, Suite
from garrison.settings import EMBEDDED_MODEL_ID, load_settings

LOCAL = "local"
_OPTION_KEYS = ("model", "api_key_env")


class UsageError(ConfigError):
    """The invocation is wrong: a malformed or duplicate --target, an unset key variable, an unknown tag."""


class EvalError(GarrisonError):
    """A target cannot be evaluated at all (unreachable, serves no model, rejects the model list)."""


@dataclass(frozen=True, slots=True)
class Target:
    """An OpenAI-compatible endpoint to evaluate; `url` None means garrison's embedded model."""

    name: str
    url: str | None = None
    model: str | None = None
    api_key_env: str | None = None

    @classmethod
    def parse(cls, spec: str) -> Target:
        """Parse `NAME=URL[,model=ID][,api_key_env=VAR]`, or `local[,model=ID]` for the embedded model."""
        head, *rest = [part.strip() for part in spec.split(",")]
        name, sep, url = head.partition("=")
        name = name.strip()
        if not name:
            raise UsageError(
                f"--target {spec!r}: missing NAME (expected NAME=URL[,model=ID][,api_key_env=VAR])"
            )
        if not sep and name != LOCAL:
            raise UsageError(f"--target {spec!r}: missing URL (NAME=URL, or 'local' for the embedded model)")
        if sep:
            parsed = urlsplit(url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise UsageError(f"--target {spec!r}: {url!r} is not an http(s) URL")
        options: dict[str, str] = {}
        for part in rest:
            key, has_value, value = part.partition("=")
            if key not in _OPTION_KEYS or not has_value or not value:
                raise UsageError(
                    f"--target {spec!r}: bad option {part!r} (allowed: model=ID, api_key_env=VAR)"
                )
            options[key] = value
        return cls(name=name, url=url if sep else None, **options)

    def api_key(self) -> str | None:
        """The API key read from `api_key_env`, if one is configured."""
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise UsageError(f"target {self.name!r}: environment variable {self.api_key_env} is not set")
        return key


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How requests are made: concurrency per target, per-request timeout, transport retries and back-off."""

    concurrency: int = 4
    timeout_s: float = 300.0
    retries: int = 3
    backoff_s: float = 0.5


ProgressFn = Callable[[str, CaseResult], None]


def api_base(url: str) -> str:
    """The OpenAI API root of a server URL: `/v1` is appended unless the URL already ends with it."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def check_targets(targets: list[Target]) -> None:
    """Reject duplicate names and missing API-key variables before any request is made."""
    if not targets:
        raise UsageError("give at least one --target")
    names = [t.name for t in targets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(f"duplicate target name(s): {', '.join(duplicates)}")
    for target in targets:
        target.api_key()


def check_rank_by(suite: Suite, tags: tuple[str, ...]) -> None:
    """Reject --rank-by tags that no case of the suite carries."""
    unknown = [tag for tag in tags if tag not in suite.tags]
    if unknown:
        known = ", ".join(suite.tags) or "none"
        raise UsageError(f"--rank-by: unknown tag(s) {', '.join(unknown)} (suite tags: {known})")


@contextlib.contextmanager
def _local_server() -> Iterator[str]:
    """Start garrison's own server in-process (auth off, free loopback port) and yield its base URL."""
    try:
        from garrison.api.server import background_server
    except ImportError as exc:
        raise EvalError(
            f"the embedded model is unavailable: cannot import garrison.api.server ({exc})"
        ) from exc
    settings = load_settings(port=0, auth={"enabled": False}, log_level="warning")
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(background_server(settings))
        except RuntimeError as exc:
            raise EvalError(f"the embedded server did not start: {exc}") from exc
        yield url


def run_eval(
    suite: Suite,
    targets: list[Target],
    options: RunOptions | None = None,
    *,
    rank_by: tuple[str, ...] = (),
    progress: ProgressFn | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> EvalRun:
    """Run every case of `suite` against each target in turn and collect the verdicts."""
    options = options or RunOptions()
    check_targets(targets)
    check_rank_by(suite, rank_by)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    results: list[TargetResult] = []
    for target in targets:
        with contextlib.ExitStack() as stack:
            model: str | None
            if target.url is None:
                base = api_base(stack.enter_context(_local_server()))
                model = target.model or EMBEDDED_MODEL_ID
            else:
                base, model = api_base(target.url), target.model
            results.append(asyncio.run(_run_target(suite, target, base, model, options, progress, transport)))
    settings: dict[str, Any] = {
        "temperature": suite.temperature,
        "seed": suite.seed,
        "max_tokens": suite.max_tokens,
        "concurrency": options.concurrency,
        "timeout_s": options.timeout_s,
        "retries": options.retries,
        "garrison_version": __version__,
    }
    if suite.system:
        settings["system"] = suite.system
    prompts = {case.id: render_prompt(case, suite.system) for case in suite.cases}
    return EvalRun(
        suite.name, suite.description, created, settings, results, rank_by=rank_by, prompts=prompts
    )


def render_prompt(case: Case, default_system: str | None = None) -> str:
    """A case's prompt for reports: the user message, else 'role: content' lines (suite system omitted)."""
    shown = [m for m in case.messages if not (m.role == "system" and m.content == default_system)]
    if len(shown) == 1 and shown[0].role == "user":
        return shown[0].content
    return "\n\n".join(f"{m.role}: {m.content}" for m in shown)


async def _run_target(
    suite: Suite,
    target: Target,
    base: str,
    model: str | None,
    options: RunOptions,
    progress: ProgressFn | None,
    transport: httpx.AsyncBaseTransport | None,
) -> TargetResult:
    """All cases of the suite against one target, at most `concurrency` in flight."""
    headers = {"User-Agent": f"garrison-eval/{__version__}"}
    key = target.api_key()
    if key:
        headers["Authorization"] = f"Bearer {key}"
    async with httpx.AsyncClient(
        base_url=base + "/", headers=headers, timeout=options.timeout_s, transport=transport
    ) as client:
        model = model or await _first_model(client, target, options)
        gate = asyncio.Semaphore(max(1, options.concurrency))

        async def one(case: Case) -> CaseResult:
            async with gate:
                result = await _ask(client, suite, case, model, options)
            if progress is not None:
                progress(target.name, result)
            return result

        cases = await asyncio.gather(*(one(case) for case in suite.cases))
    return TargetResult(name=target.name, url=base, model=model, cases=list(cases))


async def _send(
    client: httpx.AsyncClient, method: str, path: str, options: RunOptions, **kwargs: Any
) -> tuple[httpx.Response, float, int]:
    """One request retried on transport errors only; returns the response, its latency and the attempts."""
    attempt = 0
    while True:
        attempt += 1
        start = time.perf_counter()
        try:
            response = await client.request(method, path, **kwargs)
        except httpx.TransportError:
            if attempt > options.retries:
                raise
            await asyncio.sleep(options.backoff_s * 2 ** (attempt - 1))
            continue
        return response, time.perf_counter() - start, attempt


def _error_text(response: httpx.Response) -> str:
    """The message of an error response (OpenAI error body if there is one)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", body["error"]))
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return response.text[:200]


async def _first_model(client: httpx.AsyncClient, target: Target, options: RunOptions) -> str:
    """The first model id the target lists at GET /v1/models (used when no model= was given)."""
    try:
        response, _, _ = await _send(client, "GET", "models", options)
    except httpx.TransportError as exc:
        raise EvalError(f"target {target.name!r}: cannot reach {client.base_url}: {exc!r}") from exc
    if response.status_code >= 400:
        raise EvalError(
            f"target {target.name!r}: GET /v1/models: HTTP {response.status_code}: {_error_text(response)}"
        )
    try:
        return str(response.json()["data"][0]["id"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise EvalError(f"target {target.name!r}: GET /v1/models lists no model; give model=ID") from exc


def _failed(case: Case, error: str, attempts: int, latency: float | None = None) -> CaseResult:
    """A case that got no answer: every check is recorded as not run."""
    checks = [Verdict(c.type, False, "not run: the request failed") for c in case.checks]
    return CaseResult(
        case.id, case.tags, False, "", checks, latency_s=latency, error=error, attempts=attempts
    )


async def _ask(
    client: httpx.AsyncClient, suite: Suite, case: Case, model: str, options: RunOptions
) -> CaseResult:
    """Send one case as a chat completion and check the answer."""
    body = {
        "model": model,
        "messages": [{"role": m.role, "content": m.content} for m in case.messages],
        "temperature": suite.temperature,
        "seed": suite.seed,
        "max_tokens": case.max_tokens,
    }
    try:
        response, latency, attempts = await _send(client, "POST", "chat/completions", options, json=body)
    except httpx.TransportError as exc:
        return _failed(
            case, f"transport error after {options.retries + 1} attempts: {exc!r}", options.retries + 1
        )
    if response.status_code >= 400:
        return _failed(case, f"HTTP {response.status_code}: {_error_text(response)}", attempts, latency)
    try:
        data = response.json()
        choice = data["choices"][0]
        answer = choice["message"].get("content") or ""
        usage = data.get("usage") or {}
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        return _failed(case, f"malformed chat completion: {type(exc).__name__}: {exc}", attempts, latency)
    verdicts = await asyncio.to_thread(run_checks, case.checks, answer)
    return CaseResult(
        id=case.id,
        tags=case.tags,
        passed=all(v.passed for v in verdicts),
        answer=answer,
        checks=verdicts,
        latency_s=latency,
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        finish_reason=choice.get("finish_reason"),
        attempts=attempts,
    )
