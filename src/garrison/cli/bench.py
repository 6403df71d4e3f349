"""`garrison bench`: measure any OpenAI- or Ollama-compatible server, and compare two runs."""

from __future__ import annotations

from pathlib import Path

import typer

from garrison.cli.common import fail
from garrison.errors import GarrisonError

DEFAULT_REQUESTS = 50


def register(app: typer.Typer) -> None:
    """Add the `bench` command group (run a benchmark; `compare` two results) to the root app."""
    bench_app = typer.Typer(help="Benchmark an OpenAI- or Ollama-compatible server (see docs/bench.md).")

    @bench_app.callback(invoke_without_command=True)
    def bench(
        ctx: typer.Context,
        url: str | None = typer.Option(None, "--url", help="Server base URL, e.g. http://127.0.0.1:8400."),
        model: str | None = typer.Option(None, "--model", help="Model id to request."),
        api_key: str | None = typer.Option(
            None, "--api-key", envvar="GARRISON_BENCH_API_KEY", help="Bearer key (never written to results)."
        ),
        backend: str = typer.Option("openai", "--backend", help="openai (SSE chat completions) or ollama."),
        concurrency: str | None = typer.Option(
            None, "--concurrency", help="Closed-loop levels, e.g. 1,2,4,8."
        ),
        rate: str | None = typer.Option(None, "--rate", help="Open-loop levels in requests/s, e.g. 0.5,1,2."),
        burstiness: float = typer.Option(1.0, "--burstiness", help="Gamma shape of arrivals; 1 is Poisson."),
        requests: int | None = typer.Option(
            None, "--requests", help=f"Requests per level [{DEFAULT_REQUESTS}]."
        ),
        duration: str | None = typer.Option(
            None, "--duration", help="Time per level, e.g. 60s (with --requests: first wins)."
        ),
        warmup: int = typer.Option(1, "--warmup", help="Uncounted requests sent before the first level."),
        input_tokens: int = typer.Option(
            128, "--input-tokens", help="Mean synthetic prompt length in tokens."
        ),
        input_spread: float = typer.Option(
            0.0, "--input-spread", help="Standard deviation of prompt length."
        ),
        output_tokens: int = typer.Option(128, "--output-tokens", help="Mean output tokens asked for."),
        output_spread: float = typer.Option(
            0.0, "--output-spread", help="Standard deviation of output tokens."
        ),
        dataset: Path | None = typer.Option(
            None, "--dataset", help="JSONL of {prompt} or {messages} instead."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed for prompts and arrivals (same seed, same run)."),
        slo: str = typer.Option("ttft=500ms,tpot=50ms", "--slo", help="Goodput objectives; 'none' to skip."),
        timeout: str = typer.Option("300s", "--timeout", help="Per-request time limit."),
        ignore_eos: bool = typer.Option(
            True, "--ignore-eos/--no-ignore-eos", help="Ask openai servers for exact output lengths."
        ),
        out: Path | None = typer.Option(
            None, "--out", help="Folder for results.json, requests.csv and plots."
        ),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a live progress bar."),
    ) -> None:
        """Run a benchmark: `garrison bench --url URL --model ID [options]`."""
        if ctx.invoked_subcommand is not None:
            return
        if not url or not model:
            fail("--url and --model are required (or run `garrison bench compare A B`)", code=2)
            return
        from rich.console import Console

        from garrison.bench.config import BenchConfig, Slo, parse_concurrency, parse_duration, parse_rates
        from garrison.bench.run import execute

        try:
            duration_s = parse_duration(duration, param="--duration") if duration else None
            config = BenchConfig(
                url=url,
                model=model,
                backend=backend,  # type: ignore[arg-type]  # validated by BenchConfig
                api_key=api_key,
                concurrency=parse_concurrency(concurrency) if concurrency else (),
                rates=parse_rates(rate) if rate else (),
                burstiness=burstiness,
                requests=requests if requests is not None or duration_s else DEFAULT_REQUESTS,
                duration_s=duration_s,
                warmup=warmup,
                input_tokens=input_tokens,
                input_spread=input_spread,
                output_tokens=output_tokens,
                output_spread=output_spread,
                dataset=dataset,
                seed=seed,
                slo=Slo.parse(slo),
                timeout_s=parse_duration(timeout, param="--timeout"),
                ignore_eos=ignore_eos,
            )
            console = Console()
            if not console.is_terminal:
                console.width = max(console.width, 120)
            outcome = execute(config, out, console, show_progress=progress)
        except GarrisonError as exc:
            fail(exc.message, code=2)
            return
        if outcome.interrupted:
            raise typer.Exit(130)
        if not any(level["summary"]["completed"] for level in outcome.results["levels"]):
            raise typer.Exit(1)

    @bench_app.command("compare")
    def compare(
        a: Path = typer.Argument(..., help="Baseline results.json (or its folder)."),
        b: Path = typer.Argument(..., help="Candidate results.json (or its folder)."),
    ) -> None:
        """Print two results side by side, level by level, with B/A ratios."""
        from rich.console import Console

        from garrison.bench.compare import compare as compare_results
        from garrison.bench.compare import compare_table, load_results, unmatched

        try:
            doc_a, doc_b = load_results(a), load_results(b)
        except GarrisonError as exc:
            fail(exc.message, code=2)
            return
        console = Console()
        rows = compare_results(doc_a, doc_b)
        if rows:
            console.print(compare_table(rows, str(a), str(b)))
        else:
            console.print("no level is in both files (levels match by concurrency or rate)")
        for note in unmatched(doc_a, doc_b):
            console.print(f"  {note}")

    app.add_typer(bench_app, name="bench")
