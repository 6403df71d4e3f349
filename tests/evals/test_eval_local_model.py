"""`garrison eval` on the real embedded model: via the shared live server, and `--target local` end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from garrison.evals.checks import run_check
from garrison.evals.results import EvalRun, to_json
from garrison.evals.runner import RunOptions, Target, run_eval
from garrison.evals.suite import parse_suite

pytestmark = pytest.mark.model

MODEL = "smollm2-135m-instruct"
THREADS = os.environ.get("GARRISON_TEST_THREADS", str(min(2, os.cpu_count() or 1)))

SMOKE: dict[str, Any] = {
    "name": "model-smoke",
    "defaults": {"max_tokens": 48},
    "cases": [
        {
            "id": "capital",
            "tags": ["knowledge"],
            "prompt": "What is the capital of France? Answer in one word.",
            "checks": [
                {"type": "contains", "value": "paris", "ignore_case": True},
                {"type": "max_words", "value": 40},
            ],
        },
        {
            "id": "add",
            "tags": ["arithmetic"],
            "prompt": "What is 2 + 2? Answer with just the number.",
            "checks": [{"type": "number", "value": 4}],
        },
        {
            "id": "code",
            "tags": ["code"],
            "max_tokens": 96,
            "prompt": "Write a Python function add(a, b) that returns a + b. Reply with only the code.",
            "checks": [{"type": "python", "value": "assert add(2, 3) == 5"}],
        },
        {
            "id": "json",
            "tags": ["extraction"],
            "prompt": 'Reply with only this JSON object and nothing else: {"ok": true}',
            "checks": [
                {"type": "json_valid"},
                {"type": "json_schema", "value": {"type": "object", "required": ["ok"]}},
            ],
        },
        {
            "id": "style",
            "tags": ["instructions"],
            "prompt": "Say hello to a friend in one short lowercase sentence without commas.",
            "checks": [
                {"type": "lowercase"},
                {"type": "no_commas"},
                {"type": "count", "pattern": "(?i)hello|hi", "min": 1},
                {"type": "regex", "value": r"\w"},
            ],
        },
    ],
}


@pytest.fixture(scope="module")
def smoke_runs(live_server: Any) -> tuple[EvalRun, EvalRun]:
    """The smoke suite run twice against the shared real server (API key read from the environment)."""
    suite = parse_suite(SMOKE)
    target = Target("garrison", live_server.url, model=MODEL, api_key_env="GARRISON_EVAL_TEST_KEY")
    options = RunOptions(concurrency=2, timeout_s=300)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GARRISON_EVAL_TEST_KEY", live_server.api_key or "unused")
        return run_eval(suite, [target], options), run_eval(suite, [target], options)


def test_every_case_gets_a_real_answer_with_usage(smoke_runs: tuple[EvalRun, EvalRun]) -> None:
    target = smoke_runs[0].targets[0]
    assert target.model == MODEL and target.errors == 0
    for case in target.cases:
        assert case.answer.strip(), case.id
        assert case.completion_tokens and case.completion_tokens > 0
        assert case.prompt_tokens and case.prompt_tokens > 0
        assert case.latency_s and case.latency_s > 0
        assert case.finish_reason in ("stop", "length")
    assert target.tokens_per_s and target.tokens_per_s > 0


def test_verdicts_match_the_checks_on_the_real_answers(smoke_runs: tuple[EvalRun, EvalRun]) -> None:
    suite = parse_suite(SMOKE)
    target = smoke_runs[0].targets[0]
    for spec, result in zip(suite.cases, target.cases, strict=True):
        assert [v.type for v in result.checks] == [c.type for c in spec.checks]
        assert result.checks == [run_check(c, result.answer) for c in spec.checks]
        assert all(v.reason for v in result.checks)
        assert result.passed == all(v.passed for v in result.checks)
    capital = target.cases[0]
    assert capital.passed, capital.answer


def test_reruns_agree(smoke_runs: tuple[EvalRun, EvalRun]) -> None:
    first, second = (run.targets[0] for run in smoke_runs)
    assert [c.answer for c in first.cases] == [c.answer for c in second.cases]
    assert to_json(smoke_runs[0])["targets"][0]["tags"] == to_json(smoke_runs[1])["targets"][0]["tags"]


def test_cli_target_local_end_to_end_with_gate(tmp_path: Path) -> None:
    """`garrison eval SUITE --target local` in its own process (its own engine), gated by --min-score 1."""
    suite = dict(
        SMOKE,
        cases=[
            *SMOKE["cases"][:2],
            {
                "id": "impossible",
                "prompt": "Say anything.",
                "checks": [{"type": "exact", "value": "zz-never-zz"}],
            },
        ],
    )
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite), encoding="utf-8")
    out = tmp_path / "out"
    env = {**os.environ, "GARRISON_HOME": str(tmp_path / "home"), "GARRISON_ENGINE__THREADS": THREADS}
    command = [
        sys.executable,
        "-m",
        "garrison",
        "eval",
        str(path),
        "--target",
        "local",
        "--json",
        "--out",
        str(out),
        "--min-score",
        "1.0",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    document = json.loads(done.stdout)
    (local,) = document["targets"]
    assert (local["name"], local["model"], local["errors"]) == ("local", MODEL, 0)
    assert local["url"].startswith("http://127.0.0.1:")
    assert [c["id"] for c in local["cases"]] == ["capital", "add", "impossible"]
    assert local["cases"][2]["passed"] is False and local["score"] < 1.0
    assert "gate: target 'local' scored" in done.stderr
    assert json.loads((out / "results.json").read_text(encoding="utf-8"))["targets"][0]["name"] == "local"
    assert "<!doctype html>" in (out / "report.html").read_text(encoding="utf-8")
