"""`garrison bench compare A B`: two results.json files side by side, level by level, with B/A ratios."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from garrison.bench.report import fmt
from garrison.errors import InvalidRequest

# (label, path into a level summary, digits); lower is better for latencies, higher for throughput.
COMPARED: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("TTFT p50 ms", ("ttft_ms", "p50"), 1),
    ("TTFT p99 ms", ("ttft_ms", "p99"), 1),
    ("ITL p50 ms", ("itl_ms", "p50"), 2),
    ("ITL p99 ms", ("itl_ms", "p99"), 2),
    ("TPOT p50 ms", ("tpot_ms", "p50"), 2),
    ("E2E p50 ms", ("e2e_ms", "p50"), 1),
    ("E2E p99 ms", ("e2e_ms", "p99"), 1),
    ("requests/s", ("requests_per_s",), 3),
    ("output tokens/s", ("output_tokens_per_s",), 1),
    ("error rate", ("error_rate",), 3),
    ("goodput", ("goodput", "fraction"), 3),
)


@dataclass(frozen=True)
class Row:
    """One compared figure of one level."""

    level: str
    metric: str
    a: float | None
    b: float | None
    digits: int

    @property
    def ratio(self) -> float | None:
        """B / A, or None when either is missing or A is zero."""
        if self.a is None or self.b is None or self.a == 0:
            return None
        return self.b / self.a


def load_results(path: Path) -> dict[str, Any]:
    """Read a results.json (or the folder holding one) and check it has a `levels` list."""
    if path.is_dir():
        path = path / "results.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidRequest(f"no such results file: {path}") from None
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"{path} is not JSON: {exc.msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("levels"), list):
        raise InvalidRequest(f"{path} has no 'levels' list; is it a garrison bench results.json?")
    return data


def _key(level: dict[str, Any]) -> tuple[str, str]:
    if "concurrency" in level:
        return "concurrency", str(level["concurrency"])
    return "rate", str(level.get("rate"))


def _get(summary: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = summary
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return float(value) if isinstance(value, int | float) else None


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[Row]:
    """Rows for every level present in both documents (matched by concurrency or rate), in A's order."""
    b_levels = {_key(level): level for level in b["levels"]}
    rows: list[Row] = []
    for level in a["levels"]:
        other = b_levels.get(_key(level))
        if other is None:
            continue
        name = " ".join(_key(level))
        for label, path, digits in COMPARED:
            rows.append(Row(name, label, _get(level["summary"], path), _get(other["summary"], path), digits))
    return rows


def unmatched(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Levels present in only one of the two documents."""
    keys_a, keys_b = {_key(x) for x in a["levels"]}, {_key(x) for x in b["levels"]}
    return [" ".join(k) + " (only in A)" for k in sorted(keys_a - keys_b)] + [
        " ".join(k) + " (only in B)" for k in sorted(keys_b - keys_a)
    ]


def compare_table(rows: list[Row], name_a: str, name_b: str) -> Table:
    """A rich table: level, metric, A, B and B/A."""
    table = Table(title=f"A = {name_a}\nB = {name_b}", title_justify="left")
    for header in ("level", "metric", "A", "B", "B/A"):
        table.add_column(header, justify="left" if header in ("level", "metric") else "right")
    previous = None
    for row in rows:
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x"
        table.add_row(
            row.level if row.level != previous else "",
            row.metric,
            fmt(row.a, row.digits),
            fmt(row.b, row.digits),
            ratio,
        )
        previous = row.level
    return table
