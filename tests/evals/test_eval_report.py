"""Reports: terminal tables, results.json and the self-contained report.html."""

from __future__ import annotations

import json
import re
from pathlib import Path

from rich.console import Console

from garrison.evals.report import render_html, render_terminal, write_results
from garrison.evals.results import EvalRun


def test_terminal_report_shows_scores_intervals_tags_and_ranking(sample_run: EvalRun) -> None:
    console = Console(record=True, width=160)
    sample_run.rank_by = ("math",)
    render_terminal(sample_run, console)
    text = console.export_text()
    assert "75.0%" in text and "30.1–95.4" in text and "3/4" in text
    assert "100.0% [34.2–100.0] (2/2)" in text  # big on math
    assert "ranking (by math):" in text
    assert text.index("1. big") < text.index("2. small")


def test_write_results_writes_the_json_contract_and_the_html(sample_run: EvalRun, tmp_path: Path) -> None:
    results, html = write_results(sample_run, tmp_path / "out")
    document = json.loads(results.read_text(encoding="utf-8"))
    assert [t["name"] for t in document["targets"]] == ["big", "small"]
    assert document["targets"][1]["tags"] == {"code": 0.5, "math": 0.0}
    assert html.read_text(encoding="utf-8").startswith("<!doctype html>")


def test_html_is_self_contained_and_escapes_answers(sample_run: EvalRun) -> None:
    page = render_html(sample_run)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Write &lt;b&gt;code&lt;/b&gt;" in page


def test_html_puts_answers_side_by_side_and_highlights_failing_checks(sample_run: EvalRun) -> None:
    page = render_html(sample_run)
    header = re.search(r'<table class="cases"><tr><th>case</th>(.*?)</tr>', page)
    assert header is not None and header.group(1) == "<th>big</th><th>small</th>"
    rows = re.findall(r'<tr data-failing="(\d)" data-differing="(\d)">', page)
    assert rows == [("1", "1"), ("1", "1"), ("1", "1"), ("1", "1")]
    failing = re.findall(r'<li class="failed">\s*✗ <b>contains</b>: does not contain &#39;x&#39;</li>', page)
    passing = re.findall(r'<li class="ok">\s*✓ <b>contains</b>: contains &#39;x&#39;</li>', page)
    assert len(failing) == 4 and len(passing) == 4


def test_html_marks_agreeing_cases(sample_run: EvalRun) -> None:
    sample_run.targets[1].cases[0].passed = True
    page = render_html(sample_run)
    rows = re.findall(r'<tr data-failing="(\d)" data-differing="(\d)">', page)
    assert rows[0] == ("0", "0")
