"""PNG plots of a results document: latency percentiles and throughput per level, and the TTFT CDF."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

LATENCY_PANELS = (("ttft_ms", "TTFT"), ("itl_ms", "ITL"), ("tpot_ms", "TPOT"), ("e2e_ms", "E2E latency"))
PLOTTED_PERCENTILES = ("p50", "p90", "p99")


def _axis(results: dict[str, Any]) -> tuple[list[float], str]:
    levels = results["levels"]
    if levels and levels[0]["mode"] == "rate":
        rates = [float(level["rate"]) for level in levels]
        return [r if np.isfinite(r) else np.nan for r in rates], "request rate (requests/s)"
    return [float(level["concurrency"]) for level in levels], "concurrency"


def _values(levels: list[dict[str, Any]], metric: str, stat: str) -> list[float]:
    return [np.nan if (v := level["summary"][metric][stat]) is None else v for level in levels]


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=110)
    return path


def _use_log2(ax: Any, xs: list[float]) -> None:
    ticks = [x for x in xs if np.isfinite(x)]
    if not ticks:
        return
    if len(ticks) > 2 and min(ticks) > 0 and max(ticks) / min(ticks) >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [f"{x:g}" for x in ticks])


def latency_plot(results: dict[str, Any], path: Path) -> Path:
    """Four panels (TTFT, ITL, TPOT, E2E), each with p50/p90/p99 against concurrency or rate."""
    xs, xlabel = _axis(results)
    figure = Figure(figsize=(10, 7), layout="constrained")
    for ax, (metric, name) in zip(figure.subplots(2, 2).flat, LATENCY_PANELS, strict=True):
        for stat in PLOTTED_PERCENTILES:
            ax.plot(xs, _values(results["levels"], metric, stat), marker="o", label=stat)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("ms")
        ax.grid(True, alpha=0.3)
        _use_log2(ax, xs)
        ax.legend()
    figure.suptitle(f"{results['settings']['model']}: latency percentiles")
    return _save(figure, path)


def throughput_plot(results: dict[str, Any], path: Path) -> Path:
    """Output tokens/s and requests/s (with goodput when SLOs were set) against concurrency or rate."""
    xs, xlabel = _axis(results)
    levels = results["levels"]
    figure = Figure(figsize=(10, 4), layout="constrained")
    tokens_ax, requests_ax = figure.subplots(1, 2)
    tokens_ax.plot(xs, [lv["summary"]["output_tokens_per_s"] for lv in levels], marker="o", label="output")
    tokens_ax.plot(xs, [lv["summary"]["total_tokens_per_s"] for lv in levels], marker="o", label="total")
    tokens_ax.set_title("tokens/s")
    requests_ax.plot(xs, [lv["summary"]["requests_per_s"] for lv in levels], marker="o", label="completed")
    if any(lv["summary"]["goodput"] for lv in levels):
        goodput = [
            lv["summary"]["goodput"]["requests_per_s"] if lv["summary"]["goodput"] else np.nan
            for lv in levels
        ]
        requests_ax.plot(xs, goodput, marker="o", label="goodput (meets SLOs)")
    requests_ax.set_title("requests/s")
    for ax in (tokens_ax, requests_ax):
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
        _use_log2(ax, xs)
        ax.legend()
    figure.suptitle(f"{results['settings']['model']}: throughput")
    return _save(figure, path)


def ttft_cdf_plot(results: dict[str, Any], path: Path) -> Path:
    """Empirical CDF of every completed request's TTFT, one line per level."""
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    ax = figure.subplots()
    for level in results["levels"]:
        ttfts = np.sort([r["ttft_ms"] for r in level["requests"] if r["ok"] and r["ttft_ms"] is not None])
        if ttfts.size:
            ax.step(ttfts, np.arange(1, ttfts.size + 1) / ttfts.size, where="post", label=level["label"])
    ax.set_xlabel("TTFT (ms)")
    ax.set_ylabel("share of requests")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    figure.suptitle(f"{results['settings']['model']}: TTFT CDF")
    return _save(figure, path)


def write_plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """All plots for a results document; none when no level measured anything."""
    if not results["levels"]:
        return []
    return [
        latency_plot(results, out_dir / "latency.png"),
        throughput_plot(results, out_dir / "throughput.png"),
        ttft_cdf_plot(results, out_dir / "ttft_cdf.png"),
    ]
