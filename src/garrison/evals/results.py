"""Eval results, their statistics (Wilson intervals, per-tag rates, ranking) and the results.json contract.

The JSON document is a stable contract: `targets` is a list of objects with `name`, `score` (0..1),
`tags` (tag -> score) and `cases` (objects with `id`, `passed`, `answer`, `checks`). Fields may be
added; these are never renamed or removed within format `garrison.eval/1`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from garrison.errors import ConfigError
from garrison.evals.checks import Verdict

FORMAT = "garrison.eval/1"
_Z95 = 1.959963984540054


def wilson_interval(passed: int, total: int, z: float = _Z95) -> tuple[float, float]:
    """The Wilson score interval for a pass rate (95% by default); (0, 1) when there is no data."""
    if total <= 0:
        return 0.0, 1.0
    p = passed / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True, slots=True)
class Rate:
    """A pass rate with its count and 95% Wilson interval."""

    passed: int
    total: int

    @property
    def score(self) -> float:
        """Fraction passed (0 when empty)."""
        return self.passed / self.total if self.total else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        """95% Wilson score interval of the pass rate."""
        return wilson_interval(self.passed, self.total)


@dataclass(slots=True)
class CaseResult:
    """One case run against one target: the answer, every check's verdict, latency and token counts."""

    id: str
    tags: tuple[str, ...]
    passed: bool
    answer: str
    checks: list[Verdict]
    latency_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    error: str | None = None
    attempts: int = 1


@dataclass(slots=True)
class TargetResult:
    """Every case of a suite run against one target (an OpenAI-compatible endpoint and model)."""

    name: str
    url: str
    model: str
    cases: list[CaseResult] = field(default_factory=list)

    @property
    def overall(self) -> Rate:
        """Pass rate over all cases."""
        return Rate(sum(c.passed for c in self.cases), len(self.cases))

    def tag_rates(self) -> dict[str, Rate]:
        """Pass rate per tag, tags sorted."""
        tags = sorted({t for c in self.cases for t in c.tags})
        return {
            tag: Rate(
                sum(c.passed for c in self.cases if tag in c.tags), sum(tag in c.tags for c in self.cases)
            )
            for tag in tags
        }

    @property
    def errors(self) -> int:
        """Cases that got no answer (transport or HTTP error)."""
        return sum(c.error is not None for c in self.cases)

    @property
    def mean_latency_s(self) -> float | None:
        """Mean request latency over answered cases."""
        values = [c.latency_s for c in self.cases if c.latency_s is not None and c.error is None]
        return sum(values) / len(values) if values else None

    @property
    def tokens_per_s(self) -> float | None:
        """Completion tokens per second of request time, over answered cases that report usage."""
        pairs = [
            (c.completion_tokens, c.latency_s)
            for c in self.cases
            if c.error is None and c.completion_tokens is not None and c.latency_s
        ]
        seconds = sum(lat for _, lat in pairs)
        return sum(tok for tok, _ in pairs) / seconds if seconds > 0 else None


@dataclass(slots=True)
class EvalRun:
    """A whole eval: the suite's identity and request settings, and one result per target."""

    suite: str
    description: str
    created: str
    settings: dict[str, Any]
    targets: list[TargetResult]
    rank_by: tuple[str, ...] = ()
    prompts: dict[str, str] = field(default_factory=dict)

    def ranking(self) -> list[tuple[str, float]]:
        """Targets best first by the mean pass rate of the `rank_by` tags (all cases when none given)."""
        scored = [(t.name, rank_score(t, self.rank_by), t.overall.score) for t in self.targets]
        scored.sort(key=lambda item: (-item[1], -item[2], item[0]))
        return [(name, score) for name, score, _ in scored]


def rank_score(target: TargetResult, tags: tuple[str, ...]) -> float:
    """Macro average of the target's pass rates over `tags` (each tag weighs the same); overall if none."""
    if not tags:
        return target.overall.score
    rates = target.tag_rates()
    return sum(rates[t].score if t in rates else 0.0 for t in tags) / len(tags)


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _rate_json(rate: Rate) -> dict[str, Any]:
    low, high = rate.interval
    return {
        "score": _round(rate.score),
        "passed": rate.passed,
        "total": rate.total,
        "interval": [_round(low), _round(high)],
    }


def case_to_json(case: CaseResult) -> dict[str, Any]:
    """One case in the results.json contract."""
    return {
        "id": case.id,
        "passed": case.passed,
        "answer": case.answer,
        "checks": [{"type": v.type, "passed": v.passed, "reason": v.reason} for v in case.checks],
        "tags": list(case.tags),
        "latency_s": _round(case.latency_s),
        "prompt_tokens": case.prompt_tokens,
        "completion_tokens": case.completion_tokens,
        "finish_reason": case.finish_reason,
        "error": case.error,
        "attempts": case.attempts,
    }


def target_to_json(target: TargetResult) -> dict[str, Any]:
    """One target in the results.json contract (`name`, `score`, `tags`, `cases` plus details)."""
    overall = _rate_json(target.overall)
    rates = target.tag_rates()
    return {
        "name": target.name,
        "score": overall["score"],
        "tags": {tag: _round(rate.score) for tag, rate in rates.items()},
        "cases": [case_to_json(c) for c in target.cases],
        "url": target.url,
        "model": target.model,
        "passed": overall["passed"],
        "total": overall["total"],
        "interval": overall["interval"],
        "tag_details": {tag: _rate_json(rate) for tag, rate in rates.items()},
        "errors": target.errors,
        "mean_latency_s": _round(target.mean_latency_s),
        "tokens_per_s": _round(target.tokens_per_s, 2),
    }


def to_json(run: EvalRun) -> dict[str, Any]:
    """The whole run as the results.json document (also what `--json` prints)."""
    return {
        "format": FORMAT,
        "suite": {
            "name": run.suite,
            "description": run.description,
            "cases": [{"id": case_id, "prompt": prompt} for case_id, prompt in run.prompts.items()],
        },
        "created": run.created,
        "settings": run.settings,
        "rank_by": list(run.rank_by),
        "ranking": [{"name": name, "score": _round(score)} for name, score in run.ranking()],
        "targets": [target_to_json(t) for t in run.targets],
    }


def from_json(data: Any, *, source: str = "results.json") -> EvalRun:
    """Rebuild a run from a results.json document; ConfigError naming the file if it breaks the contract."""
    try:
        targets = [
            TargetResult(
                name=str(t["name"]),
                url=str(t.get("url", "")),
                model=str(t.get("model", "")),
                cases=[_case_from_json(c) for c in t["cases"]],
            )
            for t in data["targets"]
        ]
        suite = data.get("suite", {})
        return EvalRun(
            suite=str(suite.get("name", "")),
            description=str(suite.get("description", "")),
            created=str(data.get("created", "")),
            settings=dict(data.get("settings", {})),
            targets=targets,
            rank_by=tuple(data.get("rank_by", ())),
            prompts={str(c["id"]): str(c.get("prompt", "")) for c in suite.get("cases", [])},
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"{source}: not a garrison eval results document ({type(exc).__name__}: {exc})"
        ) from exc


def _case_from_json(case: dict[str, Any]) -> CaseResult:
    return CaseResult(
        id=str(case["id"]),
        tags=tuple(case.get("tags", ())),
        passed=bool(case["passed"]),
        answer=str(case["answer"]),
        checks=[Verdict(str(v["type"]), bool(v["passed"]), str(v.get("reason", ""))) for v in case["checks"]],
        latency_s=case.get("latency_s"),
        prompt_tokens=case.get("prompt_tokens"),
        completion_tokens=case.get("completion_tokens"),
        finish_reason=case.get("finish_reason"),
        error=case.get("error"),
        attempts=int(case.get("attempts", 1)),
    )
