"""`garrison eval compare A B`: case-by-case regressions and improvements between two results.json files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from garrison.errors import ConfigError
from garrison.evals.results import CaseResult, EvalRun, TargetResult, from_json


@dataclass(frozen=True, slots=True)
class CaseChange:
    """A case whose verdict differs between run A (before) and run B (after)."""

    id: str
    tags: tuple[str, ...]
    before: bool
    after: bool
    reasons: tuple[str, ...]
    answer_before: str
    answer_after: str


@dataclass(frozen=True, slots=True)
class Comparison:
    """One target of run A against its counterpart in run B."""

    before: str
    after: str
    score_before: float
    score_after: float
    regressions: tuple[CaseChange, ...]
    improvements: tuple[CaseChange, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]
    tags: dict[str, tuple[float | None, float | None]]

    @property
    def label(self) -> str:
        """The target name, or 'before → after' when the names differ."""
        return self.before if self.before == self.after else f"{self.before} → {self.after}"


def load_run(path: str | Path) -> EvalRun:
    """Read a results.json (or a directory holding one); ConfigError naming the file when unusable."""
    file = Path(path)
    if file.is_dir():
        file = file / "results.json"
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"{file}: not valid JSON: {exc}") from exc
    return from_json(data, source=str(file))


def pair_targets(
    a: EvalRun, b: EvalRun, selector: str | None = None
) -> list[tuple[TargetResult, TargetResult]]:
    """Targets to compare: by `NAME` or `BEFORE=AFTER`, else same names, else the only target of each."""
    before = {t.name: t for t in a.targets}
    after = {t.name: t for t in b.targets}
    if selector:
        name_a, _, name_b = selector.partition("=")
        name_b = name_b or name_a
        if name_a not in before or name_b not in after:
            raise ConfigError(f"--target {selector!r}: run A has {sorted(before)}, run B has {sorted(after)}")
        return [(before[name_a], after[name_b])]
    common = [name for name in before if name in after]
    if common:
        return [(before[name], after[name]) for name in common]
    if len(before) == 1 and len(after) == 1:
        return [(a.targets[0], b.targets[0])]
    raise ConfigError(
        f"no target name in common (A: {sorted(before)}, B: {sorted(after)}); "
        "choose with --target BEFORE=AFTER"
    )


def _change(old: CaseResult, new: CaseResult) -> CaseChange:
    """A flipped verdict, with the reasons the new answer fails (if it does)."""
    reasons = tuple(f"{v.type}: {v.reason}" for v in new.checks if not v.passed)
    if new.error:
        reasons = (f"error: {new.error}",)
    return CaseChange(new.id, new.tags, old.passed, new.passed, reasons, old.answer, new.answer)


def compare_targets(before: TargetResult, after: TargetResult) -> Comparison:
    """Regressions (passed → failed), improvements (failed → passed), added/removed cases, tag deltas."""
    old = {c.id: c for c in before.cases}
    new = {c.id: c for c in after.cases}
    both = [i for i in old if i in new]
    regressions = [_change(old[i], new[i]) for i in both if old[i].passed and not new[i].passed]
    improvements = [_change(old[i], new[i]) for i in both if not old[i].passed and new[i].passed]
    rates_a, rates_b = before.tag_rates(), after.tag_rates()
    tags = {
        tag: (
            rates_a[tag].score if tag in rates_a else None,
            rates_b[tag].score if tag in rates_b else None,
        )
        for tag in sorted(set(rates_a) | set(rates_b))
    }
    return Comparison(
        before=before.name,
        after=after.name,
        score_before=before.overall.score,
        score_after=after.overall.score,
        regressions=tuple(regressions),
        improvements=tuple(improvements),
        added=tuple(i for i in new if i not in old),
        removed=tuple(i for i in old if i not in new),
        tags=tags,
    )


def compare_runs(a: EvalRun, b: EvalRun, selector: str | None = None) -> list[Comparison]:
    """Compare every paired target of run A (before) with run B (after)."""
    return [compare_targets(x, y) for x, y in pair_targets(a, b, selector)]


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _delta(before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return ""
    points = 100 * (after - before)
    return f"{points:+.1f} pts" if abs(points) >= 0.05 else "±0"


def render_comparison(comparisons: list[Comparison], console: Console) -> None:
    """Print each target's score change, its regressions case by case, its improvements and tag deltas."""
    for comp in comparisons:
        console.print(
            f"[bold]{escape(comp.label)}[/bold]: {_pct(comp.score_before)} → {_pct(comp.score_after)} "
            f"({_delta(comp.score_before, comp.score_after)}), "
            f"{len(comp.regressions)} regression(s), {len(comp.improvements)} improvement(s)"
        )
        if comp.regressions:
            table = Table(title="regressions (passed before, fail now)", title_justify="left")
            table.add_column("case")
            table.add_column("tags")
            table.add_column("failing checks now")
            table.add_column("answer now")
            for change in comp.regressions:
                answer = " ".join(change.answer_after.split())
                table.add_row(
                    escape(change.id),
                    escape(", ".join(change.tags)),
                    escape("\n".join(change.reasons)),
                    escape(answer[:80] + ("…" if len(answer) > 80 else "")),
                )
            console.print(table)
        if comp.improvements:
            console.print("improvements: " + escape(", ".join(c.id for c in comp.improvements)))
        if comp.added or comp.removed:
            console.print(
                f"cases only in B: {escape(', '.join(comp.added)) or '–'}; "
                f"only in A: {escape(', '.join(comp.removed)) or '–'}"
            )
        tags = Table(title="per tag", title_justify="left")
        for column in ("tag", "A", "B", "change"):
            tags.add_column(column, justify="left" if column == "tag" else "right")
        for tag, (x, y) in comp.tags.items():
            tags.add_row(escape(tag), _pct(x), _pct(y), _delta(x, y))
        console.print(tags)


def comparison_to_json(comparisons: list[Comparison]) -> dict[str, Any]:
    """The comparison as JSON (for `garrison eval compare --json`)."""

    def change(c: CaseChange) -> dict[str, Any]:
        return {
            "id": c.id,
            "tags": list(c.tags),
            "before": c.before,
            "after": c.after,
            "reasons": list(c.reasons),
        }

    return {
        "comparisons": [
            {
                "before": comp.before,
                "after": comp.after,
                "score_before": round(comp.score_before, 4),
                "score_after": round(comp.score_after, 4),
                "regressions": [change(c) for c in comp.regressions],
                "improvements": [change(c) for c in comp.improvements],
                "added": list(comp.added),
                "removed": list(comp.removed),
                "tags": {tag: {"before": x, "after": y} for tag, (x, y) in comp.tags.items()},
            }
            for comp in comparisons
        ]
    }
