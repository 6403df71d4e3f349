"""Result statistics (Wilson intervals, per-tag rates, ranking) and the results.json contract."""

from __future__ import annotations

import json

import pytest

from garrison.errors import ConfigError
from garrison.evals.results import EvalRun, Rate, from_json, rank_score, to_json, wilson_interval


@pytest.mark.parametrize(
    ("passed", "total", "low", "high"),
    [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (10, 10, 0.7225, 1.0), (81, 100, 0.7222, 0.8749)],
)
def test_wilson_interval_matches_known_values(passed: int, total: int, low: float, high: float) -> None:
    lo, hi = wilson_interval(passed, total)
    assert lo == pytest.approx(low, abs=1e-4)
    assert hi == pytest.approx(high, abs=1e-4)


def test_wilson_interval_of_no_data_is_uninformative() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert Rate(0, 0).score == 0.0


def test_per_tag_rates_latency_and_throughput(sample_run: EvalRun) -> None:
    big = sample_run.targets[0]
    assert big.overall == Rate(3, 4)
    assert big.tag_rates() == {"code": Rate(1, 2), "math": Rate(2, 2)}
    assert big.mean_latency_s == pytest.approx(0.5)
    assert big.tokens_per_s == pytest.approx(40.0)
    assert big.errors == 0


def test_ranking_by_tags_uses_the_mean_of_their_pass_rates(sample_run: EvalRun) -> None:
    assert sample_run.ranking() == [("big", 0.75), ("small", 0.25)]
    small = sample_run.targets[1]
    assert rank_score(small, ("code",)) == 0.5
    assert rank_score(small, ("code", "math")) == 0.25
    sample_run.rank_by = ("code",)
    assert [name for name, _ in sample_run.ranking()] == ["big", "small"]  # tie on code: overall breaks it
    small.cases[3].passed = True
    assert sample_run.ranking() == [("small", 1.0), ("big", 0.5)]


def test_results_json_contract(sample_run: EvalRun) -> None:
    document = json.loads(json.dumps(to_json(sample_run)))
    assert document["format"] == "garrison.eval/1"
    big = document["targets"][0]
    assert {"name", "score", "tags", "cases"} <= set(big)
    assert big["name"] == "big" and big["score"] == 0.75
    assert big["tags"] == {"code": 0.5, "math": 1.0}
    assert big["interval"] == [pytest.approx(0.3006, abs=1e-4), pytest.approx(0.9544, abs=1e-4)]
    case = big["cases"][2]
    assert {"id", "passed", "answer", "checks"} <= set(case)
    assert case["id"] == "c1" and case["passed"] is False
    assert case["checks"] == [{"type": "contains", "passed": False, "reason": "does not contain 'x'"}]
    assert document["ranking"][0] == {"name": "big", "score": 0.75}
    assert document["suite"]["cases"][0] == {"id": "m1", "prompt": "1+1?"}


def test_results_round_trip(sample_run: EvalRun) -> None:
    again = from_json(json.loads(json.dumps(to_json(sample_run))))
    assert to_json(again) == to_json(sample_run)


def test_from_json_rejects_a_foreign_document() -> None:
    with pytest.raises(ConfigError, match="other.json: not a garrison eval results document"):
        from_json({"targets": [{"name": "x"}]}, source="other.json")
