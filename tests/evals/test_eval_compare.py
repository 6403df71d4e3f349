"""`garrison eval compare`: regressions and improvements case by case between two runs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from rich.console import Console

from garrison.errors import ConfigError
from garrison.evals.checks import Verdict
from garrison.evals.compare import compare_runs, comparison_to_json, load_run, pair_targets, render_comparison
from garrison.evals.report import write_results
from garrison.evals.results import EvalRun


def _after(run: EvalRun) -> EvalRun:
    """A later run: big regresses on m2 and improves on c1; small loses case c2 and gains c9."""
    later = copy.deepcopy(run)
    big, small = later.targets
    big.cases[1].passed = False
    big.cases[1].checks[0] = Verdict("contains", False, "does not contain 'x'")
    big.cases[2].passed = True
    small.cases.pop()
    small.cases.append(copy.deepcopy(small.cases[0]))
    small.cases[-1].id = "c9"
    return later


def test_regressions_and_improvements_case_by_case(sample_run: EvalRun) -> None:
    big, small = compare_runs(sample_run, _after(sample_run))
    assert big.label == "big"
    assert [(c.id, c.before, c.after) for c in big.regressions] == [("m2", True, False)]
    assert big.regressions[0].reasons == ("contains: does not contain 'x'",)
    assert [c.id for c in big.improvements] == ["c1"]
    assert (big.score_before, big.score_after) == (0.75, 0.75)
    assert big.tags == {"code": (0.5, 1.0), "math": (1.0, 0.5)}
    assert (small.added, small.removed) == (("c9",), ("c2",))
    assert small.regressions == () and small.improvements == ()


def test_pairing_by_name_by_selector_and_single_targets(sample_run: EvalRun) -> None:
    later = _after(sample_run)
    assert [(a.name, b.name) for a, b in pair_targets(sample_run, later)] == [
        ("big", "big"),
        ("small", "small"),
    ]
    assert [(a.name, b.name) for a, b in pair_targets(sample_run, later, "big=small")] == [("big", "small")]
    one_a, one_b = copy.deepcopy(sample_run), copy.deepcopy(later)
    one_a.targets, one_b.targets = one_a.targets[:1], one_b.targets[1:]
    assert [(a.name, b.name) for a, b in pair_targets(one_a, one_b)] == [("big", "small")]
    renamed = copy.deepcopy(later)
    renamed.targets[0].name, renamed.targets[1].name = "x", "y"
    with pytest.raises(ConfigError, match="no target name in common"):
        pair_targets(sample_run, renamed)
    with pytest.raises(ConfigError, match="--target 'nope'"):
        pair_targets(sample_run, later, "nope")


def test_rendered_and_json_comparisons(sample_run: EvalRun) -> None:
    comparisons = compare_runs(sample_run, _after(sample_run))
    console = Console(record=True, width=160)
    render_comparison(comparisons, console)
    text = console.export_text()
    assert "big: 75.0% → 75.0% (±0), 1 regression(s), 1 improvement(s)" in text
    assert "m2" in text and "contains: does not contain 'x'" in text
    assert "cases only in B: c9; only in A: c2" in text
    document = json.loads(json.dumps(comparison_to_json(comparisons)))
    assert document["comparisons"][0]["regressions"][0]["id"] == "m2"
    assert document["comparisons"][0]["tags"]["math"] == {"before": 1.0, "after": 0.5}


def test_load_run_reads_a_file_or_its_directory(sample_run: EvalRun, tmp_path: Path) -> None:
    write_results(sample_run, tmp_path / "a")
    assert load_run(tmp_path / "a").targets[0].name == "big"
    assert load_run(tmp_path / "a" / "results.json").suite == "sample"
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="bad.json: not valid JSON"):
        load_run(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="cannot read"):
        load_run(tmp_path / "missing.json")
