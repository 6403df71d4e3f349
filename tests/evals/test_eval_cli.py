"""The `garrison eval` command against a scripted OpenAI-compatible server on loopback."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from eval_helpers import ScriptedOpenAI
from typer.testing import CliRunner

from garrison.cli import build_app

SUITE = {
    "name": "cli-suite",
    "cases": [
        {
            "id": "capital",
            "prompt": "Capital of France?",
            "tags": ["geo"],
            "checks": [{"type": "contains", "value": "Paris"}],
        },
        {"id": "sum", "prompt": "2+2?", "tags": ["math"], "checks": [{"type": "number", "value": 4}]},
    ],
}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def suite_file(write_suite: Callable[..., Path], scripted_openai: ScriptedOpenAI) -> Path:
    scripted_openai.answers = {"Capital of France?": "Paris.", "2+2?": "5"}
    return write_suite(SUITE)


def test_eval_json_output_is_the_results_contract(
    runner: CliRunner, suite_file: Path, scripted_openai: ScriptedOpenAI, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    target = f"fake={scripted_openai.url}"
    result = runner.invoke(
        build_app(), ["eval", str(suite_file), "--target", target, "--json", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    (fake,) = document["targets"]
    assert (fake["name"], fake["score"], fake["tags"]) == ("fake", 0.5, {"geo": 1.0, "math": 0.0})
    assert [(c["id"], c["passed"], c["answer"]) for c in fake["cases"]] == [
        ("capital", True, "Paris."),
        ("sum", False, "5"),
    ]
    assert fake["cases"][1]["checks"] == [
        {"type": "number", "passed": False, "reason": "expected 4, found 5 (last number)"}
    ]
    assert json.loads((out / "results.json").read_text(encoding="utf-8"))["targets"][0]["score"] == 0.5
    assert (out / "report.html").is_file()
    body = scripted_openai.requests[0]["body"]
    assert (body["model"], body["temperature"], body["seed"], body["max_tokens"]) == (
        "scripted-model",
        0.0,
        0,
        128,
    )


def test_eval_prints_tables_and_accepts_options_before_the_suite(
    runner: CliRunner, suite_file: Path, scripted_openai: ScriptedOpenAI, tmp_path: Path
) -> None:
    args = [
        "eval",
        "--target",
        f"a={scripted_openai.url}",
        "--target",
        f"b={scripted_openai.url},model=other",
        "--rank-by",
        "geo",
        "--out",
        str(tmp_path / "o"),
        str(suite_file),
    ]
    result = runner.invoke(build_app(), args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "eval: cli-suite" in result.stdout
    assert "ranking (by geo):" in result.stdout
    assert "scripted-model" in result.stdout and "other" in result.stdout
    assert f"wrote {tmp_path / 'o' / 'results.json'}" in result.stderr


def test_min_score_gate_sets_the_exit_status(
    runner: CliRunner, suite_file: Path, scripted_openai: ScriptedOpenAI, tmp_path: Path
) -> None:
    base = [
        "eval",
        str(suite_file),
        "--target",
        f"fake={scripted_openai.url}",
        "--out",
        str(tmp_path / "o"),
        "--json",
    ]
    failing = runner.invoke(build_app(), [*base, "--min-score", "0.8"])
    assert failing.exit_code == 1
    assert "gate: target 'fake' scored 0.500 < --min-score 0.800" in failing.stderr
    passing = runner.invoke(build_app(), [*base, "--min-score", "0.5"])
    assert passing.exit_code == 0, passing.output


def test_bad_suite_is_rejected_before_any_request(
    runner: CliRunner, write_suite: Callable[..., Path], scripted_openai: ScriptedOpenAI
) -> None:
    bad = write_suite(
        {
            "name": "b",
            "cases": [{"id": "math-3", "prompt": "?", "checks": [{"type": "containz", "value": "Paris"}]}],
        }
    )
    result = runner.invoke(build_app(), ["eval", str(bad), "--target", f"fake={scripted_openai.url}"])
    assert result.exit_code == 2
    assert f"{bad}: case 'math-3': checks[0].type: unknown check type 'containz'" in result.stderr
    assert scripted_openai.requests == []


def test_starter_names_the_shipped_suite_and_bad_targets_exit_2(runner: CliRunner) -> None:
    result = runner.invoke(build_app(), ["eval", "starter", "--target", "remote"])
    assert result.exit_code == 2
    assert "error: --target 'remote': missing URL" in result.stderr


def test_eval_help_documents_every_option_and_compare(runner: CliRunner) -> None:
    result = runner.invoke(build_app(), ["eval", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in (
        "SUITE.yaml",
        "--target",
        "--concurrency",
        "--out",
        "--rank-by",
        "--min-score",
        "--json",
        "--timeout",
        "--retries",
    ):
        assert option in result.stdout, option
    assert "garrison eval compare A B" in result.stdout


def test_compare_is_a_subcommand_not_a_suite(
    runner: CliRunner, suite_file: Path, scripted_openai: ScriptedOpenAI, tmp_path: Path
) -> None:
    target = ["--target", f"fake={scripted_openai.url}", "--json"]
    first = runner.invoke(build_app(), ["eval", str(suite_file), *target, "--out", str(tmp_path / "a")])
    scripted_openai.answers = {"Capital of France?": "Lyon.", "2+2?": "4"}
    second = runner.invoke(build_app(), ["eval", str(suite_file), *target, "--out", str(tmp_path / "b")])
    assert first.exit_code == second.exit_code == 0
    result = runner.invoke(
        build_app(), ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b")], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "fake: 50.0% → 50.0% (±0), 1 regression(s), 1 improvement(s)" in result.stdout
    assert "capital" in result.stdout and "improvements: sum" in result.stdout
    gated = runner.invoke(
        build_app(),
        ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json", "--fail-on-regression"],
    )
    assert gated.exit_code == 1
    assert json.loads(gated.stdout)["comparisons"][0]["regressions"][0]["id"] == "capital"
    missing = runner.invoke(build_app(), ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "cannot read" in missing.stderr


def test_a_mistyped_subcommand_is_suggested_not_read_as_a_suite(runner: CliRunner) -> None:
    result = runner.invoke(build_app(), ["eval", "compar", "a.json", "b.json"])
    assert result.exit_code == 2
    assert "No such command or suite file 'compar'. Did you mean 'compare'?" in result.stderr
