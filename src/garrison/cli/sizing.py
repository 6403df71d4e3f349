"""`garrison size` (memory and speed of a model on hardware) and `garrison cost` (self-hosting vs APIs)."""

from __future__ import annotations

import json
from typing import NoReturn

import typer

from garrison.errors import GarrisonError


def _bad(exc: GarrisonError) -> NoReturn:
    """Turn a domain error into a usage error: message on stderr, exit code 2."""
    hint = f"--{exc.param.replace('_', '-')}" if exc.param and exc.param != "model" else exc.param
    raise typer.BadParameter(exc.message, param_hint=hint) from exc


def _print_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2))


def size(
    model: str | None = typer.Argument(
        None, help="GGUF file, config.json or model directory, or catalog name."
    ),
    quant: str | None = typer.Option(
        None,
        "--quant",
        help="Precision: fp32, fp16/bf16, fp8, int8, q8_0, q6_k, "
        "q5_k_m, q4_k_m, q4_0, nf4, awq, gptq... (default: the model's own).",
    ),
    context: int | None = typer.Option(
        None,
        "--context",
        help="Tokens per sequence (default 4096 or the model's trained context if shorter).",
    ),
    concurrency: int = typer.Option(1, "--concurrency", help="Sequences served at once."),
    kv_dtype: str = typer.Option("f16", "--kv-dtype", help="KV-cache element type: f16, q8_0 or q4_0."),
    hardware: str | None = typer.Option(None, "--hardware", help='Catalog device, optionally "2x NAME".'),
    here: bool = typer.Option(False, "--here", help="Detect this machine and list catalog models that fit."),
    flash_attention: bool = typer.Option(
        True,
        "--flash-attention/--no-flash-attention",
        help="Whether the runtime uses a fused attention kernel.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the stable JSON contract instead of tables."),
) -> None:
    """Estimate the memory a model needs, which hardware holds it, and how fast it could run there."""
    from rich.console import Console

    from garrison.sizing import detect, planner, report

    if here and hardware:
        raise typer.BadParameter("--here sizes for this machine; drop --hardware.", param_hint="--here")
    try:
        if here and model is None:
            machine = detect.detect()
            rows = planner.here_report(detect.machine_hardware(machine), context)
            if as_json:
                _print_json(report.here_json(machine, rows))
            else:
                report.render_here(machine, rows, Console())
            return
        if model is None:
            raise typer.BadParameter(
                "give a MODEL, or --here to list models that fit this machine.", param_hint="MODEL"
            )
        if here:
            machine = detect.detect()
            hardware_list = detect.machine_hardware(machine)
            result = planner.size_report_on(
                model,
                hardware_list,
                quant=quant,
                context=context,
                concurrency=concurrency,
                kv_dtype=kv_dtype,
                flash_attention=flash_attention,
            )
        else:
            result = planner.size_report(
                model,
                quant=quant,
                context=context,
                concurrency=concurrency,
                kv_dtype=kv_dtype,
                hardware=hardware,
                flash_attention=flash_attention,
            )
    except GarrisonError as exc:
        _bad(exc)
    if as_json:
        _print_json(report.size_json(result))
    else:
        report.render_size(result, Console())


def cost(
    hardware_price: float = typer.Option(..., "--hardware-price", help="Purchase price of the machine, USD."),
    months: float = typer.Option(..., "--months", help="Months over which the hardware is amortised."),
    watts: float = typer.Option(..., "--watts", help="Power draw while generating, W."),
    kwh_price: float = typer.Option(..., "--kwh-price", help="Electricity price, USD per kWh."),
    utilization: float = typer.Option(0.5, "--utilization", help="Share of the month spent generating."),
    bench: str | None = typer.Option(None, "--bench", help="results.json of `garrison bench` (best level)."),
    tokens_per_second: float | None = typer.Option(None, "--tokens-per-second", help="Output tokens/s."),
    api: str | None = typer.Option(None, "--api", help="Price file (YAML/JSON) instead of the shipped one."),
    idle_watts: float = typer.Option(0.0, "--idle-watts", help="Power draw while idle, W (machine left on)."),
    grid_intensity: float = typer.Option(480.0, "--grid-intensity", help="Grid carbon intensity, g CO2/kWh."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Self-hosted cost and energy per million output tokens, against API prices, and the break-even."""
    from rich.console import Console

    from garrison.sizing import cost as cost_mod
    from garrison.sizing import report

    if (bench is None) == (tokens_per_second is None):
        raise typer.BadParameter(
            "give exactly one of --bench or --tokens-per-second.", param_hint="--bench / --tokens-per-second"
        )
    try:
        tps = cost_mod.tokens_per_second_from_bench(bench) if bench else float(tokens_per_second or 0)
        inputs = cost_mod.CostInputs(
            hardware_price, months, watts, kwh_price, tps, utilization, idle_watts, grid_intensity
        )
        result = cost_mod.compute_cost(inputs, cost_mod.load_prices(api))
    except GarrisonError as exc:
        _bad(exc)
    if as_json:
        _print_json(report.cost_json(result))
    else:
        report.render_cost(result, Console())


def register(app: typer.Typer) -> None:
    """Add `size` and `cost` to the root app."""
    app.command("size")(size)
    app.command("cost")(cost)
