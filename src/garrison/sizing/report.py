"""Render sizing and cost results: rich tables for people, stable JSON dictionaries for scripts."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from garrison.sizing.cost import CostReport
from garrison.sizing.detect import Machine
from garrison.sizing.estimate import Estimate, Fit
from garrison.sizing.planner import HereRow, SizeReport


def fmt_bytes(n: float) -> str:
    """Decimal units, as model cards and spec sheets use (1 GB = 10^9 bytes)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def fmt_count(n: float) -> str:
    """Parameter counts the way model names state them (135M, 8.03B)."""
    if n >= 0.9995e9:
        return f"{n / 1e9:.2f}B"
    return f"{n / 1e6:.0f}M"


def _rate(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


# --- garrison size ---------------------------------------------------------------------------------


def fit_json(f: Fit) -> dict[str, Any]:
    """One (hardware, device count) object of the `hardware` list in `garrison size --json`."""
    return {
        "name": f.hardware.name,
        "id": f.hardware.id,
        "kind": f.hardware.kind,
        "devices": f.devices,
        "memory_bytes": f.memory_bytes,
        "memory_per_device_bytes": f.hardware.memory_bytes,
        "usable_per_device_bytes": f.hardware.usable_bytes,
        "required_per_device_bytes": f.estimate.per_device_bytes,
        "required_bytes": f.estimate.total_bytes,
        "fits": f.fits,
        "fits_with_headroom": f.fits_with_headroom,
        "decode_tokens_per_s_max": _round(f.decode_tokens_per_s_max),
        "prefill_tokens_per_s_max": _round(f.prefill_tokens_per_s_max),
        "best_precision": f.best_precision.name if f.best_precision else None,
    }


def estimate_json(est: Estimate) -> dict[str, Any]:
    """The model-level figures of `garrison size --json` (a stable contract: add keys, never rename)."""
    model = est.model
    return {
        "model": model.id,
        "model_name": model.name,
        "source": model.source,
        "architecture": {
            "layers": model.layers,
            "hidden": model.hidden,
            "heads": model.heads,
            "kv_heads": model.kv_heads,
            "head_dim": model.attn_head_dim,
            "intermediate": model.intermediate,
            "vocab": model.vocab,
            "trained_context": model.context,
            "experts": model.experts,
            "experts_active": model.experts_active,
            "sliding_window": model.sliding_window,
            "sliding_layers": model.sliding_layers,
        },
        "precision": est.precision.name,
        "bits_per_weight": round(est.precision.bits, 4),
        "context": est.workload.context,
        "concurrency": est.workload.concurrency,
        "kv_dtype": est.workload.kv_dtype,
        "flash_attention": est.workload.flash_attention,
        "runtime": est.runtime.kind,
        "devices": est.devices,
        "params": model.params,
        "active_params": model.active_params,
        "is_moe": model.is_moe,
        "weights_bytes": est.weights_bytes,
        "kv_cache_bytes_per_token": est.kv_bytes_per_token,
        "kv_cache_bytes": est.kv_cache_bytes,
        "activations_bytes": est.activations_bytes,
        "overhead_bytes": est.overhead_bytes,
        "total_bytes": est.total_bytes,
        "per_device_bytes": est.per_device_bytes,
    }


def size_json(report: SizeReport) -> dict[str, Any]:
    """`garrison size --json`: the estimate, then every (hardware, device count) tried."""
    out = estimate_json(report.estimate)
    out["headroom"] = report.headroom
    out["recommended_precision"] = report.recommended.name if report.recommended else None
    out["hardware"] = [fit_json(f) for row in report.rows for f in row.fits]
    out["notes"] = list(report.notes)
    return out


def render_size(report: SizeReport, console: Console) -> None:
    """The human view of `garrison size`: breakdown, notes, hardware table, recommendation."""
    est = report.estimate
    model = est.model
    w = est.workload
    console.print(f"[bold]{model.name}[/]  ({model.source})")
    params = f"{fmt_count(model.params)} parameters"
    if model.is_moe:
        params += f", {fmt_count(model.active_params)} active per token"
    console.print(
        f"{params}; {est.precision.name} at {est.precision.bits:.2f} bits/weight; context {w.context:,}"
        f" x {w.concurrency} sequence(s); KV cache {w.kv_dtype}; runtime {est.runtime.kind}"
        f" on {est.devices} device(s)"
    )
    table = Table(show_header=True, header_style="bold")
    table.add_column("Component")
    table.add_column("Bytes", justify="right")
    table.add_row("Weights", fmt_bytes(est.weights_bytes))
    table.add_row("KV cache per token", fmt_bytes(est.kv_bytes_per_token))
    table.add_row(f"KV cache ({w.context:,} x {w.concurrency})", fmt_bytes(est.kv_cache_bytes))
    table.add_row("Activations (compute buffers)", fmt_bytes(est.activations_bytes))
    table.add_row("Runtime overhead", fmt_bytes(est.overhead_bytes))
    table.add_row("[bold]Total[/]", f"[bold]{fmt_bytes(est.total_bytes)}[/]")
    console.print(table)
    for note in report.notes:
        console.print(f"  - {note}")

    hw_table = Table(
        title=f"Hardware (headroom = {report.headroom:.0%} of usable memory left free)", header_style="bold"
    )
    for name, justify in (
        ("Hardware", "left"),
        ("Memory", "right"),
        ("Devices", "right"),
        ("Need/device", "right"),
        ("Decode tok/s<=", "right"),
        ("Prefill tok/s<=", "right"),
        ("Best fit", "left"),
    ):
        hw_table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in report.rows:
        chosen = row.chosen
        first = row.fits[0]
        if chosen.fits:
            devices = f"[green]{chosen.devices}[/]" + ("" if chosen.fits_with_headroom else " tight")
        else:
            devices = f"[red]>{chosen.devices}[/]" if len(row.fits) > 1 else "[red]no[/]"
        best = first.best_precision.name if first.best_precision else "-"
        if first.devices > 1:
            best += f" on {first.devices}"
        hw_table.add_row(
            row.hardware.name,
            fmt_bytes(row.hardware.memory_bytes),
            devices,
            fmt_bytes(chosen.estimate.per_device_bytes),
            _rate(chosen.decode_tokens_per_s_max),
            _rate(chosen.prefill_tokens_per_s_max),
            best,
        )
    console.print(hw_table)
    console.print(
        "Devices: fewest that hold the model (tight = under 10% spare). Best fit: largest precision "
        "that fits one device (or the count asked for) with headroom. Speeds are upper bounds."
    )
    if report.target is not None:
        best = report.recommended.name if report.recommended else "none (even q2_k does not fit)"
        console.print(
            f"Largest precision that fits {report.target.name} with {report.headroom:.0%} headroom: "
            f"[bold]{best}[/]"
        )


# --- garrison size --here --------------------------------------------------------------------------


def here_json(machine: Machine, rows: list[HereRow]) -> dict[str, Any]:
    """`garrison size --here --json`: the detected machine and, per catalog model, where it fits."""
    return {
        "machine": {
            "cpu": machine.cpu,
            "cores": machine.cores,
            "ram_bytes": machine.ram_bytes,
            "gpus": [{"name": g.name, "memory_bytes": g.memory_bytes} for g in machine.gpus],
            "apple_chip": machine.apple_chip,
        },
        "models": [
            {
                "model": r.model.id,
                "params": r.model.params,
                "fits": r.fit is not None,
                "precision": r.fit.best_precision.name if r.fit and r.fit.best_precision else None,
                "device": r.fit.hardware.name if r.fit else None,
                "devices": r.fit.devices if r.fit else None,
                "total_bytes": r.fit.estimate.total_bytes if r.fit else None,
                "context": r.fit.estimate.workload.context if r.fit else None,
                "decode_tokens_per_s_max": _round(r.fit.decode_tokens_per_s_max) if r.fit else None,
            }
            for r in rows
        ],
    }


def render_here(machine: Machine, rows: list[HereRow], console: Console) -> None:
    """The human view of `garrison size --here`."""
    gpus = ", ".join(f"{g.name} ({fmt_bytes(g.memory_bytes)})" for g in machine.gpus) or "none found"
    console.print(
        f"[bold]This machine[/]: {machine.cpu}, {machine.cores} threads, "
        f"{fmt_bytes(machine.ram_bytes)} RAM; GPUs: {gpus}"
    )
    table = Table(title="Catalog models that fit (largest precision with 10% headroom)", header_style="bold")
    for name in ("Model", "Params", "Precision", "Where", "Total", "Decode tok/s <="):
        table.add_column(name)
    for r in rows:
        if r.fit is None:
            table.add_row(r.model.name, fmt_count(r.model.params), "[red]does not fit[/]", "-", "-", "-")
            continue
        where = f"{r.fit.devices}x {r.fit.hardware.name}" if r.fit.devices > 1 else r.fit.hardware.name
        precision = r.fit.best_precision.name if r.fit.best_precision else "-"
        table.add_row(
            r.model.name,
            fmt_count(r.model.params),
            precision,
            where,
            fmt_bytes(r.fit.estimate.total_bytes),
            _rate(r.fit.decode_tokens_per_s_max),
        )
    console.print(table)


# --- garrison cost ---------------------------------------------------------------------------------


def cost_json(report: CostReport) -> dict[str, Any]:
    """`garrison cost --json`."""
    i = report.inputs
    return {
        "inputs": {
            "hardware_price_usd": i.hardware_price,
            "months": i.months,
            "watts": i.watts,
            "idle_watts": i.idle_watts,
            "kwh_price_usd": i.kwh_price,
            "utilization": i.utilization,
            "tokens_per_second": i.tokens_per_second,
            "grid_g_co2_per_kwh": i.grid_g_per_kwh,
        },
        "tokens_per_month": round(report.tokens_per_month),
        "capacity_mtok_per_month": round(report.capacity_mtok_per_month, 3),
        "hardware_usd_per_month": round(report.hardware_per_month, 2),
        "energy_kwh_per_month": round(report.energy_kwh_per_month, 2),
        "energy_usd_per_month": round(report.energy_cost_per_month, 2),
        "cost_usd_per_mtok": round(report.cost_per_mtok, 4),
        "energy_kwh_per_mtok": round(report.energy_kwh_per_mtok, 4),
        "co2_kg_per_mtok": round(report.co2_kg_per_mtok, 4),
        "fixed_usd_per_month": round(report.fixed_per_month, 2),
        "marginal_usd_per_mtok": round(report.marginal_per_mtok, 4),
        "prices_as_of": report.prices.as_of.isoformat(),
        "prices_file": report.prices.path,
        "api": [
            {
                "provider": c.api.provider,
                "model": c.api.model,
                "input_usd_per_mtok": c.api.input_per_mtok,
                "output_usd_per_mtok": c.api.output_per_mtok,
                "self_hosted_over_api": None if c.ratio is None else round(c.ratio, 3),
                "breakeven_mtok_per_month": None
                if c.breakeven_mtok_per_month is None
                else round(c.breakeven_mtok_per_month, 3),
                "breakeven_utilization": None
                if c.breakeven_utilization is None
                else round(c.breakeven_utilization, 4),
            }
            for c in report.comparisons
        ],
    }


def render_cost(report: CostReport, console: Console) -> None:
    """The human view of `garrison cost`."""
    i = report.inputs
    console.print(
        f"[bold]Self-hosted[/]: {i.tokens_per_second:,.1f} output tok/s at {i.utilization:.0%} "
        f"utilization = {report.tokens_per_month / 1e6:,.1f} M tokens/month "
        f"(capacity {report.capacity_mtok_per_month:,.1f} M at 100%)"
    )
    console.print(
        f"  hardware ${report.hardware_per_month:,.2f}/month over {i.months:g} months; energy "
        f"{report.energy_kwh_per_month:,.1f} kWh = ${report.energy_cost_per_month:,.2f}/month"
    )
    console.print(
        f"  [bold]${report.cost_per_mtok:,.3f} per million output tokens[/]; "
        f"{report.energy_kwh_per_mtok:,.3f} kWh and {report.co2_kg_per_mtok:,.3f} kg CO2 per million "
        f"(at {i.grid_g_per_kwh:g} g/kWh)"
    )
    table = Table(
        title=f"Against API prices (as of {report.prices.as_of.isoformat()}, {report.prices.path})",
        header_style="bold",
    )
    for name in (
        "Provider",
        "Model",
        "Output $/M",
        "Self-hosted / API",
        "Break-even M tok/month",
        "Break-even utilization",
    ):
        table.add_column(name)
    for c in report.comparisons:
        ratio = "-" if c.ratio is None else f"{c.ratio:.2f}x"
        if c.breakeven_mtok_per_month is None or c.breakeven_utilization is None:
            volume, util = "never", "-"
        else:
            volume = f"{c.breakeven_mtok_per_month:,.1f}"
            util = f"{c.breakeven_utilization:.1%}" + (
                " (needs more machines)" if c.breakeven_utilization > 1 else ""
            )
        table.add_row(c.api.provider, c.api.model, f"{c.api.output_per_mtok:.2f}", ratio, volume, util)
    console.print(table)
