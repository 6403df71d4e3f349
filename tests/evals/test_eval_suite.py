"""Suite loading: the format builds as documented; bad suites are rejected naming file, case and field."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from garrison.errors import ConfigError
from garrison.evals.checks import CHECK_TYPES
from garrison.evals.suite import SuiteError, load_suite, suite_schema

SuiteWriter = Callable[..., Path]


def _suite(*cases: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"name": "t", **top, "cases": list(cases)}


def _problems(write_suite: SuiteWriter, document: dict[str, Any] | str) -> tuple[Path, list[str]]:
    path = write_suite(document)
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    return path, info.value.problems


def test_a_valid_suite_is_built_with_defaults_and_overrides(write_suite: SuiteWriter) -> None:
    path = write_suite(
        _suite(
            {"id": "a", "prompt": "Hi", "tags": ["x"], "checks": [{"type": "contains", "value": "Hi"}]},
            {
                "id": "b",
                "messages": [
                    {"role": "user", "content": "Q1"},
                    {"role": "assistant", "content": "A1"},
                    {"role": "user", "content": "Q2"},
                ],
                "system": "Case system.",
                "max_tokens": 9,
                "checks": [{"type": "number", "value": 3, "tolerance": 0.5}],
            },
            description="d",
            defaults={"temperature": 0.2, "max_tokens": 64, "seed": 7, "system": "Be brief."},
        )
    )
    suite = load_suite(path)
    assert (suite.name, suite.description, suite.temperature, suite.seed) == ("t", "d", 0.2, 7)
    first, second = suite.cases
    assert [(m.role, m.content) for m in first.messages] == [("system", "Be brief."), ("user", "Hi")]
    assert first.max_tokens == 64 and first.tags == ("x",)
    assert [m.role for m in second.messages] == ["system", "user", "assistant", "user"]
    assert second.messages[0].content == "Case system."
    assert second.max_tokens == 9
    assert second.checks[0].tolerance == 0.5
    assert suite.tags == ["x"]


def test_defaults_are_temperature_zero_and_a_fixed_seed(write_suite: SuiteWriter) -> None:
    suite = load_suite(write_suite(_suite({"id": "a", "prompt": "Hi", "checks": [{"type": "lowercase"}]})))
    assert (suite.temperature, suite.seed, suite.cases[0].max_tokens) == (0.0, 0, 128)
    assert [m.role for m in suite.cases[0].messages] == ["user"]


def test_unknown_check_type_names_file_case_and_field(write_suite: SuiteWriter) -> None:
    case = {"id": "math-3", "prompt": "?", "checks": [{"type": "containz", "value": "Paris"}]}
    path, problems = _problems(write_suite, _suite(case))
    assert problems == [
        f"{path}: case 'math-3': checks[0].type: unknown check type 'containz' (known: "
        + ", ".join(sorted(CHECK_TYPES))
        + ")"
    ]


def test_invalid_regex_names_file_case_and_field(write_suite: SuiteWriter) -> None:
    case = {"id": "r1", "prompt": "?", "checks": [{"type": "lowercase"}, {"type": "regex", "value": "([a-z"}]}
    path, problems = _problems(write_suite, _suite(case))
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}: case 'r1': checks[1].value: invalid regex '([a-z'")


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ({"prompt": "?", "checks": [{"type": "lowercase"}]}, "case #1: id: missing required field"),
        ({"id": "c", "prompt": "?"}, "case 'c': checks: missing required field"),
        (
            {"id": "c", "prompt": "?", "checks": [{"value": "x"}]},
            "case 'c': checks[0].type: missing required field",
        ),
        (
            {"id": "c", "prompt": "?", "checks": [{"type": "contains"}]},
            "case 'c': checks[0].value: missing required field",
        ),
        (
            {"id": "c", "prompt": "?", "checks": [{"type": "number", "value": "x"}]},
            "case 'c': checks[0].value: 'x' is not of type 'number'",
        ),
        (
            {"id": "c", "checks": [{"type": "lowercase"}]},
            "case 'c': prompt: give exactly one of 'prompt' or 'messages'",
        ),
        (
            {
                "id": "c",
                "prompt": "?",
                "messages": [{"role": "user", "content": "?"}],
                "checks": [{"type": "lowercase"}],
            },
            "case 'c': prompt: give exactly one of 'prompt' or 'messages'",
        ),
        (
            {
                "id": "c",
                "messages": [{"role": "assistant", "content": "?"}],
                "checks": [{"type": "lowercase"}],
            },
            "case 'c': messages[0].role: the last message must be the user's",
        ),
        (
            {"id": "c", "prompt": "?", "promt": "typo", "checks": [{"type": "lowercase"}]},
            "case 'c': promt: unknown field",
        ),
        (
            {"id": "c", "prompt": "?", "checks": [{"type": "count", "value": "a"}]},
            "case 'c': checks[0].min: give 'min', 'max' or both",
        ),
        (
            {"id": "c", "prompt": "?", "checks": [{"type": "python", "value": "assert ("}]},
            "case 'c': checks[0].value: test code does not compile",
        ),
        (
            {"id": "c", "prompt": "?", "checks": [{"type": "json_schema", "value": {"type": "nope"}}]},
            "case 'c': checks[0].value: invalid JSON Schema",
        ),
    ],
)
def test_bad_cases_are_rejected_naming_case_and_field(
    write_suite: SuiteWriter, case: dict[str, Any], expected: str
) -> None:
    path, problems = _problems(write_suite, _suite(case))
    assert any(p.startswith(f"{path}: {expected}") for p in problems), problems


def test_duplicate_ids_and_every_problem_are_reported_together(write_suite: SuiteWriter) -> None:
    check = [{"type": "lowercase"}]
    path, problems = _problems(
        write_suite,
        _suite(
            {"id": "a", "prompt": "?", "checks": check},
            {"id": "a", "prompt": "?", "checks": [{"type": "regex", "value": "("}]},
            {"id": "b", "prompt": "?", "checks": [{"type": "max_words", "value": -1}]},
        ),
    )
    assert f"{path}: case 'a': id: duplicate case id (first used by case #1)" in problems
    assert any(p.startswith(f"{path}: case 'a': checks[0].value: invalid regex") for p in problems)
    assert any(
        p.startswith(f"{path}: case 'b': checks[0].value: -1 is less than the minimum") for p in problems
    )
    assert len(problems) == 3


def test_top_level_problems_name_the_field(write_suite: SuiteWriter) -> None:
    path, problems = _problems(
        write_suite,
        {
            "cases": [{"id": "a", "prompt": "?", "checks": [{"type": "lowercase"}]}],
            "defaults": {"temperature": 5},
        },
    )
    assert f"{path}: name: missing required field" in problems
    assert any(p.startswith(f"{path}: defaults.temperature: 5 is greater than the maximum") for p in problems)


def test_invalid_yaml_names_the_line(write_suite: SuiteWriter) -> None:
    path, problems = _problems(write_suite, "name: t\ncases:\n  - {id: a, prompt: x?}\n  - [unclosed\n")
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}: invalid YAML (line ")


def test_a_missing_file_and_a_non_mapping_are_rejected(tmp_path: Path, write_suite: SuiteWriter) -> None:
    with pytest.raises(SuiteError, match="cannot read"):
        load_suite(tmp_path / "absent.yaml")
    _, problems = _problems(write_suite, "- just\n- a list\n")
    assert problems == [f"{tmp_path / 'suite.yaml'}: the suite must be a mapping with 'name' and 'cases'"]


def test_suite_errors_are_config_errors() -> None:
    assert issubclass(SuiteError, ConfigError)


def test_the_shipped_schema_is_a_valid_json_schema_listing_every_check_type() -> None:
    schema = suite_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert set(schema["$defs"]["check"]["properties"]["type"]["enum"]) == set(CHECK_TYPES)
