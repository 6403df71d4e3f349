"""Outputs of a run: live progress, terminal tables, results.json (a stable contract) and requests.csv."""

from __future__ import annotations

import csv
import json
import math
import os
import platform
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from garrison import __version__
from garrison.bench.client import RequestRecord
from garrison.bench.load import LevelRun, SweepState
from garrison.bench.metrics import request_row, summarise

SCHEMA = "garrison.bench.results/1"
CSV_SKIP = ("itl_ms",)
STAT_COLUMNS = ("mean", "std", "p50", "p90", "p95", "p99", "min", "max")
TABLE_METRICS = (
    ("TTFT", "ttft_ms"),
    ("ITL", "itl_ms"),
    ("TPOT", "tpot_ms"),
    ("E2E", "e2e_ms"),
    ("client wait", "queue_wait_ms"),
)


def _json_number(value: float) -> float | str:
    return "inf" if math.isinf(value) else value


def environment(state: SweepState) -> dict[str, Any]:
    """Where the numbers were taken: versions, machine, clock and endpoint."""
    return {
        "garrison": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "aiohttp": aiohttp.__version__,
        "numpy": np.__version__,
        "clock": "time.perf_counter",
        "endpoint": state.endpoint,
        "started_at": state.started_utc,
    }


def level_entry(run: LevelRun, state: SweepState) -> dict[str, Any]:
    """One `levels` item: its load setting, summary and every request's timings."""
    level = run.level
    entry: dict[str, Any] = {"mode": level.mode, "label": level.label}
    if level.mode == "concurrency":
        entry["concurrency"] = int(level.value)
    else:
        entry["rate"] = _json_number(level.value)
        entry["burstiness"] = state.config.burstiness
    entry.update(
        {
            "started_at": run.started_utc,
            "interrupted": run.interrupted,
            "abandoned_in_flight": run.abandoned,
            "summary": summarise(run.records, run.duration_s, state.config.slo, run.client_stats()),
            "requests": [request_row(r, state.t0) for r in sorted(run.records, key=lambda r: r.index)],
        }
    )
    return entry


def build_results(state: SweepState) -> dict[str, Any]:
    """The results.json document: settings, environment, and one entry per level that measured anything."""
    return {
        "schema": SCHEMA,
        "tool": "garrison bench",
        "settings": state.config.settings(),
        "environment": environment(state),
        "interrupted": state.interrupted,
        "levels": [level_entry(run, state) for run in state.levels if run.records],
    }


def write_json(results: dict[str, Any], path: Path) -> None:
    """Write results.json (strict JSON: no NaN or Infinity)."""
    path.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def write_csv(results: dict[str, Any], path: Path) -> None:
    """One row per request, with its level; ITL lists stay in results.json."""
    rows: list[dict[str, Any]] = []
    for level in results["levels"]:
        for request in level["requests"]:
            row = {
                "level": level["label"],
                "concurrency": level.get("concurrency"),
                "rate": level.get("rate"),
            }
            row.update({k: v for k, v in request.items() if k not in CSV_SKIP})
            rows.append(row)
    fields = list(rows[0]) if rows else ["level", "concurrency", "rate"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def write_outputs(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """results.json, requests.csv and the PNG plots into `out_dir`; returns the files written."""
    from garrison.bench.plots import write_plots

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out_dir / "results.json", out_dir / "requests.csv"
    write_json(results, json_path)
    write_csv(results, csv_path)
    return [json_path, csv_path, *write_plots(results, out_dir)]


def fmt(value: Any, digits: int = 1) -> str:
    """A number for a table cell; '-' when missing."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100.0 * value:.0f}%"


def level_table(entry: dict[str, Any]) -> Table:
    """Distribution table of one level: latency metrics against mean, std and percentiles (ms)."""
    s = entry["summary"]
    title = f"{entry['label']}: {s['completed']} ok, {s['failed']} failed in {s['duration_s']:.1f} s"
    table = Table(title=title, title_justify="left")
    table.add_column("ms")
    for column in STAT_COLUMNS:
        table.add_column(column, justify="right")
    for name, key in TABLE_METRICS:
        table.add_row(name, *(fmt(s[key][c]) for c in STAT_COLUMNS))
    return table


def level_notes(entry: dict[str, Any]) -> list[str]:
    """Throughput, goodput, token source, errors and client load of one level, as short lines."""
    s = entry["summary"]
    notes = [
        f"requests/s {fmt(s['requests_per_s'], 2)} | output tokens/s {fmt(s['output_tokens_per_s'])} | "
        f"total tokens/s {fmt(s['total_tokens_per_s'])} | "
        f"tokens/chunk {fmt(s['tokens_per_chunk']['mean'], 2)}"
    ]
    source = {"usage": "the server's usage", "chunks": "counted streamed chunks"}.get(
        s["output_tokens_source"] or "", str(s["output_tokens_source"])
    )
    notes.append(f"output tokens from {source}; error rate {_pct(s['error_rate'])}")
    if s["goodput"]:
        slo = ", ".join(f"{k.removesuffix('_ms')}<={v:g}ms" for k, v in s["goodput"]["slo"].items())
        notes.append(f"goodput {_pct(s['goodput']['fraction'])} of requests meet {slo}")
    if s["errors"]:
        notes.append("errors: " + ", ".join(f"{kind} x{count}" for kind, count in s["errors"].items()))
    client = s["client"]
    notes.append(
        f"client CPU {fmt(client.get('cpu_percent'), 0)}% of a core "
        f"(machine {fmt(client.get('system_cpu_percent'), 0)}%), "
        f"loop lag p99 {fmt(client.get('loop_lag_p99_ms'), 1)} ms, "
        f"peak in flight {client.get('peak_in_flight')}"
    )
    if client.get("saturated"):
        notes.append(
            "[bold yellow]warning: the client itself was busy; latencies may include client overhead[/]"
        )
    if entry["interrupted"]:
        notes.append(
            f"[yellow]interrupted: {entry['abandoned_in_flight']} requests in flight were dropped[/]"
        )
    return notes


def sweep_table(results: dict[str, Any]) -> Table:
    """One row per level: the figures to compare across a sweep."""
    levels = results["levels"]
    by_rate = bool(levels) and levels[0]["mode"] == "rate"
    table = Table(title="garrison bench: sweep summary (latencies in ms)", title_justify="left")
    headers = ("rate/s" if by_rate else "conc.", "ok", "fail", "req/s", "out tok/s", "TTFT p50", "TTFT p99")
    for header in (*headers, "ITL p50", "TPOT p50", "E2E p50", "goodput", "client CPU"):
        table.add_column(header, justify="right")
    for entry in levels:
        s = entry["summary"]
        goodput = _pct(s["goodput"]["fraction"]) if s["goodput"] else "-"
        table.add_row(
            fmt(entry["rate"], 2).rstrip("0").rstrip(".") if by_rate else str(entry["concurrency"]),
            str(s["completed"]),
            str(s["failed"]),
            fmt(s["requests_per_s"], 2),
            fmt(s["output_tokens_per_s"], 0),
            fmt(s["ttft_ms"]["p50"]),
            fmt(s["ttft_ms"]["p99"]),
            fmt(s["itl_ms"]["p50"]),
            fmt(s["tpot_ms"]["p50"]),
            fmt(s["e2e_ms"]["p50"]),
            goodput,
            f"{fmt(s['client'].get('cpu_percent'), 0)}%",
        )
    return table


class ConsoleObserver:
    """Shows a live progress bar per level and prints each level's table as it ends."""

    def __init__(self, console: Console, state: SweepState, show_progress: bool = True) -> None:
        self._console = console
        self._state = state
        self._progress: Progress | None = None
        if show_progress:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("errors {task.fields[errors]}"),
                TimeElapsedColumn(),
                console=console,
                refresh_per_second=4,
            )
        self._task: Any = None
        self._errors = 0

    def level_started(self, run: LevelRun, total: int | None, duration_s: float | None) -> None:
        """Start a bar for the level (or the warm-up)."""
        self._errors = 0
        if self._progress is None:
            return
        name = "warm-up" if run.index < 0 else run.level.label
        if duration_s is not None and total is None:
            name += f" ({duration_s:g} s)"
        self._progress.start()
        self._task = self._progress.add_task(name, total=total, errors=0)

    def request_done(self, run: LevelRun, record: RequestRecord) -> None:
        """Advance the bar; count errors."""
        self._errors += not record.ok
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1, errors=self._errors)

    def level_finished(self, run: LevelRun) -> None:
        """Stop the bar and print the level's table (not for the warm-up)."""
        if self._progress is not None:
            self._progress.stop()
            if self._task is not None:
                self._progress.remove_task(self._task)
                self._task = None
        if run.index < 0:
            failed = sum(not r.ok for r in run.records)
            if failed:
                kinds = sorted({str(r.error) for r in run.records if r.error})
                self._console.print(
                    f"[yellow]warm-up: {failed} of {len(run.records)} failed ({', '.join(kinds)})[/]"
                )
            return
        if not run.records:
            return
        entry = level_entry(run, self._state)
        self._console.print(level_table(entry))
        for line in level_notes(entry):
            self._console.print("  " + line)

    def close(self) -> None:
        """Stop any bar still showing."""
        if self._progress is not None:
            self._progress.stop()
