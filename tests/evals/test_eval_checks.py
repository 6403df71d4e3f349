"""Every check type's verdict on fixed answers: one answer that passes, one that fails, and the reason."""

from __future__ import annotations

from typing import Any

import pytest

from garrison.evals.checks import CHECK_TYPES, Check, check_problems, numbers_in, parse_json_answer, run_check

PERSON_SCHEMA = {
    "type": "object",
    "required": ["name", "age"],
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
}

# (check fields, an answer that passes, an answer that fails, a phrase the failing reason contains)
CASES: list[tuple[dict[str, Any], str, str, str]] = [
    (
        {"type": "contains", "value": "Paris"},
        "The capital is Paris.",
        "It is Lyon.",
        "does not contain 'Paris'",
    ),
    ({"type": "contains", "value": "paris", "ignore_case": True}, "PARIS!", "Rome", "does not contain"),
    ({"type": "not_contains", "value": "sorry"}, "Here you go.", "I am sorry.", "contains 'sorry'"),
    ({"type": "exact", "value": "OK"}, "  OK\n", "OK.", "expected 'OK'"),
    ({"type": "exact", "value": "ok", "ignore_case": True}, "Ok", "okay", "expected 'ok'"),
    ({"type": "regex", "value": r"\b11:35\b"}, "It ends at 11:35.", "It ends at 11:350", "no match"),
    ({"type": "regex", "value": "^yes", "ignore_case": True}, "Yes, it is.", "No.", "no match"),
    ({"type": "one_of", "value": ["A", "B"]}, " B ", "B) Mars", "not one of"),
    ({"type": "number", "value": 42}, "The answer is 42.", "The answer is 41.", "expected 42, found 41"),
    ({"type": "number", "value": 42, "tolerance": 0.5}, "about 42.4", "about 42.6", "expected 42 ± 0.5"),
    ({"type": "number", "value": -215}, "125 - 340 = -215", "215", "found 215"),
    ({"type": "number", "value": 1234.5}, "Total: $1,234.50", "Total: 1234", "found 1234"),
    ({"type": "number", "value": 7, "pick": "first"}, "7 apples, then 9", "9 apples, then 7", "first number"),
    ({"type": "number", "value": 7, "pick": "any"}, "5, 6, 7, 8", "5, 6, 8", "any number"),
    ({"type": "number", "value": 3}, "3", "no digits here", "found no number"),
    ({"type": "json_valid"}, '{"a": 1}', "{'a': 1}", "not valid JSON"),
    ({"type": "json_valid", "value": True}, "```json\n[1, 2]\n```", "Here: [1, 2]", "not valid JSON"),
    (
        {"type": "json_schema", "value": PERSON_SCHEMA},
        '{"name": "Ada", "age": 36}',
        '{"name": "Ada", "age": -1}',
        "schema violation at age",
    ),
    (
        {"type": "json_schema", "value": PERSON_SCHEMA},
        '{"name": "Ada", "age": 36}',
        '{"name": "Ada"}',
        "'age' is a required property",
    ),
    (
        {"type": "json_schema", "value": PERSON_SCHEMA},
        '{"name": "Ada", "age": 36}',
        "Ada, 36",
        "not valid JSON",
    ),
    ({"type": "max_words", "value": 3}, "one two three", "one two three four", "4 words (max 3)"),
    ({"type": "min_words", "value": 3}, "one two three", "one two", "2 words (min 3)"),
    (
        {"type": "starts_with", "value": "Dear team,"},
        "  Dear team, hello",
        "Hello. Dear team,",
        "does not start",
    ),
    ({"type": "ends_with", "value": "help?"}, "Anything else I can help?\n", "help? Bye.", "does not end"),
    ({"type": "lowercase"}, "all quiet here.", "All quiet here.", "uppercase letters found: A"),
    ({"type": "lowercase"}, "ok 123", "123 456", "no letters"),
    ({"type": "no_commas"}, "no commas at all", "one, two, three", "2 commas found"),
    (
        {"type": "count", "value": "green", "min": 3, "ignore_case": True},
        "Green green GREEN",
        "green evergreen greens",
        "occurs 1 time",
    ),
    (
        {"type": "count", "value": "cat", "max": 0},
        "A small feline.",
        "The cat sat.",
        "occurs 1 time (allowed 0..0)",
    ),
    (
        {"type": "count", "pattern": r"(?m)^\* ", "min": 2, "max": 2},
        "* a\n* b",
        "* a\n* b\n* c",
        "occurs 3 times",
    ),
    (
        {"type": "python", "value": "assert add(2, 3) == 5"},
        "```python\ndef add(a, b):\n    return a + b\n```",
        "```python\ndef add(a, b):\n    return a - b\n```",
        "test failed: AssertionError",
    ),
]


@pytest.mark.parametrize(
    ("fields", "good", "bad", "reason"), CASES, ids=[f"{c[0]['type']}-{i}" for i, c in enumerate(CASES)]
)
def test_check_verdicts_on_fixed_answers(fields: dict[str, Any], good: str, bad: str, reason: str) -> None:
    check = Check.from_dict(fields)
    passed = run_check(check, good)
    failed = run_check(check, bad)
    assert passed.passed, passed.reason
    assert not failed.passed
    assert reason in failed.reason
    assert passed.type == failed.type == fields["type"]


def test_every_check_type_is_exercised() -> None:
    assert {fields["type"] for fields, *_ in CASES} == set(CHECK_TYPES)


def test_numbers_in_reads_signs_separators_and_decimals() -> None:
    assert numbers_in("From -3 to 1,234.5 then 7e2, not v2 or 3-5") == [-3.0, 1234.5, 700.0, 3.0, 5.0]


def test_parse_json_answer_accepts_bare_and_fenced_json_only() -> None:
    assert parse_json_answer('  {"a": [1]} ') == {"a": [1]}
    assert parse_json_answer('```JSON\n{"a": 2}\n```') == {"a": 2}
    with pytest.raises(ValueError):
        parse_json_answer('Sure! {"a": 1}')


def test_a_faulty_check_yields_a_failed_verdict_with_the_error() -> None:
    verdict = run_check(Check(type="contains", value=None), "text")  # not reachable through a valid suite
    assert not verdict.passed
    assert verdict.reason.startswith("check error: TypeError")


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"type": "regex", "value": "([a-z"}, "value", "invalid regex"),
        ({"type": "count", "value": "a", "pattern": "b", "min": 1}, "value", "exactly one of"),
        ({"type": "count", "value": "a"}, "min", "give 'min', 'max' or both"),
        ({"type": "count", "value": "a", "min": 3, "max": 1}, "max", "below min"),
        ({"type": "count", "pattern": "(", "max": 1}, "pattern", "invalid regex"),
        ({"type": "json_schema", "value": {"type": 12}}, "value", "invalid JSON Schema"),
        ({"type": "python", "value": "def ("}, "value", "does not compile"),
        (
            {"type": "contains", "value": "x", "tolerance": 1},
            "tolerance",
            "does not apply to check type 'contains'",
        ),
        ({"type": "containz", "value": "x"}, "type", "unknown check type 'containz'"),
    ],
)
def test_check_problems_name_the_field(fields: dict[str, Any], field: str, message: str) -> None:
    problems = check_problems(fields)
    assert any(f == field and message in m for f, m in problems), problems


def test_valid_checks_have_no_problems() -> None:
    for fields, *_ in CASES:
        assert check_problems(fields) == [], fields
