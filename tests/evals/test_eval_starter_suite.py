"""The shipped starter suite: valid, large and varied enough, and every case passable yet not vacuous."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from garrison.evals.checks import CHECK_TYPES, run_checks
from garrison.evals.suite import Suite, load_suite, starter_suite_path

REFERENCE = Path(__file__).with_name("starter_reference_answers.yaml")
CATEGORIES = {"code", "arithmetic", "reasoning", "instructions", "extraction", "summarisation", "safety"}


@pytest.fixture(scope="module")
def starter() -> Suite:
    return load_suite(starter_suite_path())


def test_starter_suite_has_sixty_cases_across_every_category(starter: Suite) -> None:
    assert len(starter.cases) >= 60
    per_category = Counter(tag for case in starter.cases for tag in case.tags if tag in CATEGORIES)
    assert set(per_category) == CATEGORIES
    assert min(per_category.values()) >= 7
    assert all(any(tag in CATEGORIES for tag in case.tags) for case in starter.cases)
    refusal = [c for c in starter.cases if "refusal" in c.tags]
    assert len(refusal) >= 5


def test_starter_suite_uses_every_check_type_and_modest_max_tokens(starter: Suite) -> None:
    assert {check.type for case in starter.cases for check in case.checks} == set(CHECK_TYPES)
    assert starter.temperature == 0.0
    assert max(case.max_tokens for case in starter.cases) <= 128


def test_reference_answers_pass_every_starter_case(starter: Suite) -> None:
    answers = yaml.safe_load(REFERENCE.read_text(encoding="utf-8"))
    assert set(answers) == {case.id for case in starter.cases}
    failures = {
        case.id: [v.reason for v in run_checks(case.checks, answers[case.id]) if not v.passed]
        for case in starter.cases
    }
    assert {k: v for k, v in failures.items() if v} == {}


def test_an_empty_answer_fails_every_starter_case(starter: Suite) -> None:
    vacuous = [case.id for case in starter.cases if all(v.passed for v in run_checks(case.checks, ""))]
    assert vacuous == []
