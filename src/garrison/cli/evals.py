"""`garrison eval`: run a prompt suite against OpenAI-compatible targets, or compare two runs."""

from __future__ import annotations

import difflib
import json
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from typer.core import TyperGroup

from garrison.errors import ConfigError, GarrisonError

if TYPE_CHECKING:  # the click types TyperGroup is declared with (typer vendors click as typer._click)
    from typer._click import Context, HelpFormatter

_RUN = "run"
_EPILOG = (
    "Also: garrison eval compare A B [--target NAME] [--json] [--fail-on-regression] shows the cases "
    "that regressed between two runs (see garrison eval compare --help)."
)


class EvalGroup(TyperGroup):
    """The `eval` group: a first argument that is not a subcommand is the suite of the hidden `run`."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        """Route `garrison eval SUITE.yaml ...` to `run` while `garrison eval compare A B` stays a command."""
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            first = args[0]
            if not first.startswith("-") and first != "starter" and not Path(first).exists():
                commands = [name for name in self.commands if name != _RUN]
                close = difflib.get_close_matches(first, commands, n=1)
                if close:
                    ctx.fail(f"No such command or suite file {first!r}. Did you mean {close[0]!r}?")
            args = [_RUN, *args]
        return super().parse_args(ctx, args)

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        """Show the run command's usage and every option as `garrison eval --help`."""
        command = self.commands[_RUN]
        run_ctx = command.make_context(ctx.info_name, [], parent=ctx.parent, resilient_parsing=True)
        command.format_help(run_ctx, formatter)


def _fail(exc: GarrisonError) -> typer.Exit:
    """Report a garrison error on stderr; invalid input exits 2, anything else 1."""
    typer.echo(f"error: {exc.message}", err=True)
    return typer.Exit(2 if isinstance(exc, ConfigError) else 1)


def _default_out(suite_name: str) -> Path:
    """eval-results/SUITE-YYYYmmdd-HHMMSS, so that runs never overwrite each other."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", suite_name).strip("-") or "suite"
    return Path("eval-results") / f"{slug}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def run_command(
    suite: str = typer.Argument(
        ...,
        metavar="SUITE.yaml",
        help="Suite file (YAML); 'starter' runs the starter suite shipped with garrison.",
    ),
    target: list[str] = typer.Option(
        ...,
        "--target",
        "-t",
        help="NAME=URL[,model=ID][,api_key_env=VAR] of an OpenAI-compatible server, or 'local' for the "
        "embedded model. Repeat to compare targets.",
    ),
    concurrency: int = typer.Option(
        4, "--concurrency", "-c", min=1, max=256, help="Requests in flight per target."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Directory for results.json and report.html (default: eval-results/SUITE-TIME)."
    ),
    rank_by: str | None = typer.Option(
        None, "--rank-by", help="Comma-separated tags; targets are ranked by the mean of their pass rates."
    ),
    min_score: float | None = typer.Option(
        None,
        "--min-score",
        min=0.0,
        max=1.0,
        help="Exit 1 if any target's overall score is below this (CI gate).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the results.json document instead of tables."),
    timeout: float = typer.Option(
        300.0, "--timeout", min=1.0, help="Seconds allowed per request (queueing included)."
    ),
    retries: int = typer.Option(
        3, "--retries", min=0, max=10, help="Retries on transport errors (never on HTTP ones)."
    ),
) -> None:
    """Run SUITE.yaml against each --target and report pass rates. Compare runs: garrison eval compare A B."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from garrison.evals.report import render_terminal, write_results
    from garrison.evals.results import CaseResult, to_json
    from garrison.evals.runner import RunOptions, Target, run_eval
    from garrison.evals.suite import load_suite, starter_suite_path

    err = Console(stderr=True)
    try:
        path = starter_suite_path() if suite == "starter" and not Path(suite).exists() else Path(suite)
        loaded = load_suite(path)
        targets = [Target.parse(spec) for spec in target]
        tags = tuple(t.strip() for t in (rank_by or "").split(",") if t.strip())
        options = RunOptions(concurrency=concurrency, timeout_s=timeout, retries=retries)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=err, transient=True) as bar:
            tasks = {t.name: bar.add_task(f"eval {t.name}", total=len(loaded.cases)) for t in targets}

            def advance(name: str, _: CaseResult) -> None:
                bar.advance(tasks[name])

            run = run_eval(loaded, targets, options, rank_by=tags, progress=advance)
    except GarrisonError as exc:
        raise _fail(exc) from None
    results_path, html_path = write_results(run, out or _default_out(loaded.name))
    if as_json:
        typer.echo(json.dumps(to_json(run), indent=2, ensure_ascii=False))
    else:
        render_terminal(run, Console())
    err.print(f"wrote {results_path} and {html_path}")
    if min_score is not None:
        below = [t for t in run.targets if t.overall.score < min_score]
        for t in below:
            err.print(f"gate: target {t.name!r} scored {t.overall.score:.3f} < --min-score {min_score:.3f}")
        if below:
            raise typer.Exit(1)


def compare_command(
    a: Path = typer.Argument(..., metavar="A", help="results.json (or its directory) of the earlier run."),
    b: Path = typer.Argument(..., metavar="B", help="results.json (or its directory) of the later run."),
    target: str | None = typer.Option(
        None, "--target", "-t", help="Compare only target NAME, or BEFORE=AFTER when the names differ."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
    fail_on_regression: bool = typer.Option(
        False, "--fail-on-regression", help="Exit 1 if any case that passed in A fails in B."
    ),
) -> None:
    """Show regressions case by case between two eval runs (A before, B after)."""
    from rich.console import Console

    from garrison.evals.compare import compare_runs, comparison_to_json, load_run, render_comparison

    try:
        comparisons = compare_runs(load_run(a), load_run(b), target)
    except GarrisonError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(comparison_to_json(comparisons), indent=2, ensure_ascii=False))
    else:
        render_comparison(comparisons, Console())
    if fail_on_regression and any(c.regressions for c in comparisons):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the `eval` group (`garrison eval SUITE.yaml ...`, `garrison eval compare A B`) to the root app."""
    group = typer.Typer(
        cls=EvalGroup,
        name="eval",
        help="Evaluate models on prompt suites with verifiable checks.",
        no_args_is_help=True,
    )
    group.command(_RUN, hidden=True, epilog=_EPILOG)(run_command)
    group.command("compare")(compare_command)
    app.add_typer(group, name="eval")
