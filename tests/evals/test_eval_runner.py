"""The runner over a scripted HTTP transport: request shape, model lookup, retries, errors, concurrency."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from garrison.evals.runner import EvalError, RunOptions, Target, UsageError, api_base, run_eval
from garrison.evals.suite import Suite, parse_suite

FAST = RunOptions(concurrency=2, timeout_s=5, retries=2, backoff_s=0.0)


def _suite(n: int = 2, **defaults: Any) -> Suite:
    cases = [
        {
            "id": f"q{i}",
            "prompt": f"question {i}",
            "tags": ["even" if i % 2 == 0 else "odd"],
            "checks": [{"type": "contains", "value": f"answer {i}"}],
        }
        for i in range(n)
    ]
    return parse_suite({"name": "s", "defaults": defaults, "cases": cases})


def _completion(content: str, tokens: int = 3) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": 5 + tokens},
        },
    )


def _echo(request: httpx.Request) -> httpx.Response:
    """Answer 'answer N' to 'question N'; list one model."""
    if request.url.path == "/v1/models":
        return httpx.Response(200, json={"data": [{"id": "listed-model"}, {"id": "other"}]})
    body = json.loads(request.content)
    return _completion(body["messages"][-1]["content"].replace("question", "answer"))


def test_requests_are_deterministic_and_answers_checked() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _echo(request)

    suite = _suite(2, max_tokens=32, system="Be brief.")
    run = run_eval(suite, [Target("t", "http://host:9/v1")], FAST, transport=httpx.MockTransport(handler))
    posts = [json.loads(r.content) for r in seen if r.method == "POST"]
    assert [str(r.url) for r in seen if r.method == "GET"] == ["http://host:9/v1/models"]
    assert posts[0] == {
        "model": "listed-model",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "question 0"}],
        "temperature": 0.0,
        "seed": 0,
        "max_tokens": 32,
    }
    target = run.targets[0]
    assert (target.name, target.url, target.model) == ("t", "http://host:9/v1", "listed-model")
    assert [(c.id, c.passed, c.answer) for c in target.cases] == [
        ("q0", True, "answer 0"),
        ("q1", True, "answer 1"),
    ]
    assert target.cases[0].completion_tokens == 3 and target.cases[0].latency_s is not None
    assert run.settings["temperature"] == 0.0 and run.settings["seed"] == 0
    assert run.prompts == {"q0": "question 0", "q1": "question 1"}
    assert run.settings["system"] == "Be brief."


def test_model_option_and_api_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _echo(request)

    monkeypatch.setenv("EVAL_TEST_KEY", "sk-test")
    target = Target.parse("remote=http://host:9,model=chosen,api_key_env=EVAL_TEST_KEY")
    run = run_eval(_suite(1), [target], FAST, transport=httpx.MockTransport(handler))
    assert [r.method for r in seen] == ["POST"]
    assert seen[0].headers["Authorization"] == "Bearer sk-test"
    assert json.loads(seen[0].content)["model"] == "chosen"
    assert run.targets[0].url == "http://host:9/v1"


def test_transport_errors_are_retried() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise httpx.ConnectError("refused", request=request)
        return _echo(request)

    run = run_eval(
        _suite(1), [Target("t", "http://h", model="m")], FAST, transport=httpx.MockTransport(handler)
    )
    case = run.targets[0].cases[0]
    assert case.passed and case.attempts == 3 and case.error is None


def test_exhausted_retries_record_an_error_and_fail_every_check() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    run = run_eval(
        _suite(1), [Target("t", "http://h", model="m")], FAST, transport=httpx.MockTransport(handler)
    )
    case = run.targets[0].cases[0]
    assert not case.passed and case.attempts == 3
    assert case.error is not None and case.error.startswith("transport error after 3 attempts")
    assert [(v.passed, v.reason) for v in case.checks] == [(False, "not run: the request failed")]
    assert run.targets[0].errors == 1


def test_http_errors_are_not_retried() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return httpx.Response(503, json={"error": {"message": "queue full", "type": "server_overloaded"}})

    run = run_eval(
        _suite(1), [Target("t", "http://h", model="m")], FAST, transport=httpx.MockTransport(handler)
    )
    case = run.targets[0].cases[0]
    assert calls["n"] == 1
    assert case.error == "HTTP 503: queue full" and case.attempts == 1 and not case.passed


def test_malformed_completion_is_an_error_not_a_crash() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"choices": []}))
    run = run_eval(_suite(1), [Target("t", "http://h", model="m")], FAST, transport=transport)
    error = run.targets[0].cases[0].error
    assert error is not None and error.startswith("malformed chat completion")


def test_concurrency_is_bounded() -> None:
    state = {"now": 0, "peak": 0}

    async def handler(request: httpx.Request) -> httpx.Response:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.01)
        state["now"] -= 1
        return _echo(request)

    options = RunOptions(concurrency=3, timeout_s=5, retries=0)
    run = run_eval(
        _suite(12), [Target("t", "http://h", model="m")], options, transport=httpx.MockTransport(handler)
    )
    assert state["peak"] == 3
    assert [c.id for c in run.targets[0].cases] == [f"q{i}" for i in range(12)]


def test_progress_is_reported_per_case_and_target() -> None:
    seen: list[tuple[str, str]] = []
    run_eval(
        _suite(2),
        [Target("a", "http://h", model="m"), Target("b", "http://h2", model="m")],
        FAST,
        progress=lambda name, case: seen.append((name, case.id)),
        transport=httpx.MockTransport(_echo),
    )
    assert sorted(seen) == [("a", "q0"), ("a", "q1"), ("b", "q0"), ("b", "q1")]


def test_unreachable_model_list_is_an_eval_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(EvalError, match="target 't': cannot reach"):
        run_eval(_suite(1), [Target("t", "http://h")], FAST, transport=httpx.MockTransport(handler))
    empty = httpx.MockTransport(lambda request: httpx.Response(200, json={"data": []}))
    with pytest.raises(EvalError, match="lists no model; give model=ID"):
        run_eval(_suite(1), [Target("t", "http://h")], FAST, transport=empty)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("local", Target("local")),
        ("local,model=other", Target("local", model="other")),
        ("a=http://h:1", Target("a", "http://h:1")),
        ("a=https://h/v1,model=m,api_key_env=K", Target("a", "https://h/v1", "m", "K")),
    ],
)
def test_target_specs_parse(spec: str, expected: Target) -> None:
    assert Target.parse(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("remote", "missing URL"),
        ("=http://h", "missing NAME"),
        ("a=ftp://h", "is not an http(s) URL"),
        ("a=http://h,modl=x", "bad option 'modl=x'"),
        ("a=http://h,model=", "bad option 'model='"),
    ],
)
def test_bad_target_specs_are_rejected(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Target.parse(spec)


def test_usage_errors_come_before_any_request(monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request may be sent")

    transport = httpx.MockTransport(handler)
    monkeypatch.delenv("EVAL_MISSING_KEY", raising=False)
    with pytest.raises(UsageError, match="EVAL_MISSING_KEY is not set"):
        run_eval(
            _suite(1), [Target("t", "http://h", api_key_env="EVAL_MISSING_KEY")], FAST, transport=transport
        )
    with pytest.raises(UsageError, match="duplicate target name"):
        run_eval(_suite(1), [Target("t", "http://h"), Target("t", "http://i")], FAST, transport=transport)
    with pytest.raises(UsageError, match=r"--rank-by: unknown tag\(s\) nope"):
        run_eval(_suite(1), [Target("t", "http://h")], FAST, rank_by=("nope",), transport=transport)


def test_api_base_appends_v1_once() -> None:
    assert api_base("http://h:1") == "http://h:1/v1"
    assert api_base("http://h:1/v1/") == "http://h:1/v1"
    assert api_base("http://h/proxy") == "http://h/proxy/v1"
