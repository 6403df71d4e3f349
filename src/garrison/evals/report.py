"""Eval reports: the terminal tables, results.json and a self-contained report.html."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from garrison.evals.results import EvalRun, Rate, TargetResult, to_json


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _rate(rate: Rate) -> str:
    """A pass rate as '45.0% [30.1–60.2] (9/20)'."""
    low, high = rate.interval
    return f"{_pct(rate.score)} [{100 * low:.1f}–{100 * high:.1f}] ({rate.passed}/{rate.total})"


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def render_terminal(run: EvalRun, console: Console) -> None:
    """Print the per-target summary, the per-tag pass rates and the ranking."""
    summary = Table(title=f"eval: {escape(run.suite)}", title_justify="left")
    for column in ("target", "model", "score", "95% CI", "passed", "errors", "mean latency", "tokens/s"):
        summary.add_column(column, justify="left" if column in ("target", "model") else "right")
    for target in run.targets:
        overall = target.overall
        low, high = overall.interval
        summary.add_row(
            escape(target.name),
            escape(target.model),
            _pct(overall.score),
            f"{100 * low:.1f}–{100 * high:.1f}",
            f"{overall.passed}/{overall.total}",
            str(target.errors),
            _num(target.mean_latency_s, ".2f") + " s",
            _num(target.tokens_per_s, ".1f"),
        )
    console.print(summary)

    tags = sorted({tag for target in run.targets for tag in target.tag_rates()})
    if tags:
        per_tag = Table(title="pass rate per tag [95% CI] (passed/total)", title_justify="left")
        per_tag.add_column("tag")
        for target in run.targets:
            per_tag.add_column(escape(target.name), justify="right")
        rates = [target.tag_rates() for target in run.targets]
        for tag in tags:
            per_tag.add_row(escape(tag), *(_rate(r[tag]) if tag in r else "–" for r in rates))
        console.print(per_tag)

    basis = escape(", ".join(run.rank_by)) if run.rank_by else "all cases"
    console.print(f"[bold]ranking[/bold] (by {basis}):")
    for place, (name, score) in enumerate(run.ranking(), start=1):
        console.print(f"  {place}. {escape(name)}  {_pct(score)}")


def write_results(run: EvalRun, out_dir: Path) -> tuple[Path, Path]:
    """Write results.json and report.html into `out_dir` (created if needed); return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / "results.json"
    results_path.write_text(json.dumps(to_json(run), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    html_path = out_dir / "report.html"
    html_path.write_text(render_html(run), encoding="utf-8")
    return results_path, html_path


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>garrison eval: {{ run.suite }}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem;color:#1d1d1f;
 background:#fafafa}
h1{margin:0 0 .2rem}h2{margin-top:2rem}.muted{color:#666}
table{border-collapse:collapse;background:#fff;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.35rem .6rem;vertical-align:top;text-align:left}
th{background:#f0f0f3}td.num{text-align:right;white-space:nowrap}
.cases td{max-width:34rem}.cases td.prompt{max-width:26rem}
pre{white-space:pre-wrap;word-break:break-word;margin:.3rem 0;font:12.5px/1.4 ui-monospace,Menlo,monospace;
background:#f6f6f8;padding:.4rem;border-radius:4px}
.badge{display:inline-block;padding:0 .45rem;border-radius:3px;font-weight:600;font-size:12px}
.pass{background:#dff5e1;color:#14532d}.fail{background:#fde2e1;color:#7f1d1d}
ul.checks{margin:.2rem 0;padding-left:1.1rem}ul.checks li.failed{background:#fde2e1;color:#7f1d1d}
ul.checks li.ok{color:#2f6f3e}
.tag{font-size:11px;background:#eef;border-radius:3px;padding:0 .3rem;margin-right:.2rem}
.error{color:#7f1d1d;font-weight:600}.bar{height:8px;background:#e5e5ea;border-radius:4px;width:8rem}
.bar span{display:block;height:8px;border-radius:4px;background:#3b82f6}
</style></head><body>
<h1>garrison eval: {{ run.suite }}</h1>
<p class="muted">{{ run.description }}</p>
<p class="muted">run {{ run.created }} ·
{% for k, v in run.settings.items() %}{{ k }}={{ v }}{{ " · " if not loop.last }}{% endfor %}</p>

<h2>Summary</h2>
<table><tr><th>target</th><th>model</th><th>url</th><th>score</th><th></th><th>95% CI</th><th>passed</th>
<th>errors</th><th>mean latency</th><th>tokens/s</th></tr>
{% for t in targets %}<tr><td>{{ t.name }}</td><td>{{ t.model }}</td><td>{{ t.url }}</td>
<td class="num">{{ t.score }}</td><td><div class="bar"><span style="width:{{ t.width }}%"></span></div></td>
<td class="num">{{ t.ci }}</td><td class="num">{{ t.passed }}</td><td class="num">{{ t.errors }}</td>
<td class="num">{{ t.latency }}</td><td class="num">{{ t.tps }}</td></tr>
{% endfor %}</table>

<h2>Pass rate per tag</h2>
<table><tr><th>tag</th>{% for t in targets %}<th>{{ t.name }}</th>{% endfor %}</tr>
{% for row in tag_rows %}<tr><td>{{ row.tag }}</td>
{% for cell in row.cells %}<td class="num">{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</table>

<h2>Ranking <span class="muted">(by {{ rank_basis }})</span></h2>
<ol>{% for name, score in ranking %}<li>{{ name }} — {{ score }}</li>{% endfor %}</ol>

<h2>Cases</h2>
<p><label><input type="checkbox" id="only-failing"> only cases with a failure</label>
<label><input type="checkbox" id="only-differing"> only cases where targets disagree</label></p>
<table class="cases"><tr><th>case</th>{% for t in targets %}<th>{{ t.name }}</th>{% endfor %}</tr>
{% for row in case_rows %}<tr data-failing="{{ row.failing }}" data-differing="{{ row.differing }}">
<td class="prompt"><b>{{ row.id }}</b><br>
{% for tag in row.tags %}<span class="tag">{{ tag }}</span>{% endfor %}
<pre>{{ row.prompt }}</pre></td>
{% for cell in row.cells %}<td>{% if cell is none %}<span class="muted">not run</span>{% else %}
<span class="badge {{ 'pass' if cell.passed else 'fail' }}">{{ 'PASS' if cell.passed else 'FAIL' }}</span>
<span class="muted">{{ cell.meta }}</span>
{% if cell.error %}<div class="error">{{ cell.error }}</div>{% endif %}
<pre>{{ cell.answer }}</pre>
<ul class="checks">{% for v in cell.checks %}<li class="{{ 'ok' if v.passed else 'failed' }}">
{{ '✓' if v.passed else '✗' }} <b>{{ v.type }}</b>: {{ v.reason }}</li>{% endfor %}</ul>{% endif %}</td>
{% endfor %}</tr>
{% endfor %}</table>
<script>
(function () {
  var failing = document.getElementById("only-failing");
  var differing = document.getElementById("only-differing");
  function apply() {
    document.querySelectorAll("tr[data-failing]").forEach(function (row) {
      var hide = (failing.checked && row.dataset.failing !== "1") ||
                 (differing.checked && row.dataset.differing !== "1");
      row.style.display = hide ? "none" : "";
    });
  }
  failing.addEventListener("change", apply); differing.addEventListener("change", apply);
})();
</script>
</body></html>
"""


def _target_view(target: TargetResult) -> dict[str, Any]:
    """One summary row of the HTML report, formatted."""
    overall = target.overall
    low, high = overall.interval
    return {
        "name": target.name,
        "model": target.model,
        "url": target.url,
        "score": _pct(overall.score),
        "width": round(100 * overall.score, 1),
        "ci": f"{_pct(low)} – {_pct(high)}",
        "passed": f"{overall.passed}/{overall.total}",
        "errors": target.errors,
        "latency": _num(target.mean_latency_s, ".2f") + " s",
        "tps": _num(target.tokens_per_s, ".1f"),
    }


def _case_rows(run: EvalRun) -> list[dict[str, Any]]:
    """One row per case id (suite order, then any case only some targets have), one cell per target."""
    by_target = [{case.id: case for case in target.cases} for target in run.targets]
    order = list(run.prompts)
    for cases in by_target:
        order.extend(case_id for case_id in cases if case_id not in order)
    rows = []
    for case_id in order:
        found = [cases.get(case_id) for cases in by_target]
        present = [case for case in found if case is not None]
        verdicts = {case.passed for case in present}
        cells = [
            None
            if case is None
            else {
                "passed": case.passed,
                "answer": case.answer,
                "error": case.error,
                "checks": case.checks,
                "meta": " · ".join(
                    part
                    for part in (
                        f"{case.latency_s:.2f} s" if case.latency_s is not None else "",
                        f"{case.completion_tokens} tokens" if case.completion_tokens is not None else "",
                        f"finish: {case.finish_reason}" if case.finish_reason else "",
                    )
                    if part
                ),
            }
            for case in found
        ]
        rows.append(
            {
                "id": case_id,
                "tags": present[0].tags if present else (),
                "prompt": run.prompts.get(case_id, ""),
                "cells": cells,
                "failing": "1" if False in verdicts else "0",
                "differing": "1" if len(verdicts) > 1 or len(present) < len(found) else "0",
            }
        )
    return rows


def render_html(run: EvalRun) -> str:
    """The self-contained HTML report: summary, per-tag rates, ranking, and answers side by side."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    tags = sorted({tag for target in run.targets for tag in target.tag_rates()})
    rates = [target.tag_rates() for target in run.targets]
    tag_rows = [{"tag": tag, "cells": [_rate(r[tag]) if tag in r else "–" for r in rates]} for tag in tags]
    ranking = [(name, _pct(score)) for name, score in run.ranking()]
    return env.from_string(_TEMPLATE).render(
        run=run,
        targets=[_target_view(t) for t in run.targets],
        tag_rows=tag_rows,
        ranking=ranking,
        rank_basis=", ".join(run.rank_by) if run.rank_by else "all cases",
        case_rows=_case_rows(run),
    )
