"""A whole benchmark run: the sweep, Ctrl-C that keeps what was measured, then tables and files."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from garrison.bench.config import BenchConfig
from garrison.bench.load import Observer, Sweep, SweepState
from garrison.bench.report import ConsoleObserver, build_results, sweep_table, write_outputs


@dataclass
class Outcome:
    """The results document of a run and the files it wrote."""

    results: dict[str, Any]
    files: list[Path] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        """True when the run was stopped before its last request."""
        return bool(self.results["interrupted"])


async def measure(
    config: BenchConfig, observer: Observer | None = None, state: SweepState | None = None
) -> dict[str, Any]:
    """Run a sweep in a running event loop and return its results (no console or files); `state` fills."""
    state = state or SweepState(config)
    await Sweep(config, state, observer or _Silent()).run()
    return build_results(state)


def execute(config: BenchConfig, out: Path | None, console: Console, show_progress: bool = True) -> Outcome:
    """Run the sweep to the end or to Ctrl-C, print the summary, and write `out` with what was measured."""
    state = SweepState(config)
    observer = ConsoleObserver(console, state, show_progress)
    try:
        asyncio.run(Sweep(config, state, observer).run())
    except KeyboardInterrupt:
        state.interrupted = True
        console.print("[yellow]interrupted: keeping what was measured so far[/]")
    finally:
        observer.close()
    results = build_results(state)
    if results["levels"]:
        console.print(sweep_table(results))
    else:
        console.print("[yellow]no request completed: nothing to summarise[/]")
    outcome = Outcome(results)
    if out is not None:
        outcome.files = write_outputs(results, out)
        console.print(f"wrote {', '.join(str(p) for p in outcome.files)}")
    return outcome


class _Silent:
    """An observer that ignores everything."""

    def level_started(self, run: Any, total: int | None, duration_s: float | None) -> None:
        """Ignore."""

    def request_done(self, run: Any, record: Any) -> None:
        """Ignore."""

    def level_finished(self, run: Any) -> None:
        """Ignore."""
