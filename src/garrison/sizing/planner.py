"""`garrison size` as a function: resolve the model, estimate it, and fit it to hardware."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from garrison.errors import InvalidRequest
from garrison.sizing import catalog
from garrison.sizing.architecture import ModelSpec
from garrison.sizing.catalog import Hardware
from garrison.sizing.estimate import (
    HEADROOM,
    Estimate,
    Fit,
    Workload,
    best_precision,
    default_context,
    device_counts,
    estimate,
    fit,
)
from garrison.sizing.precisions import RECOMMENDABLE, Precision, get_precision


def resolve_model(arg: str) -> ModelSpec:
    """A GGUF file, a config.json (or a directory holding one), or a catalog name."""
    path = Path(arg).expanduser()
    if path.exists():
        if path.is_file() and path.suffix.lower() == ".gguf":
            from garrison.sizing.gguf_reader import read_gguf

            return read_gguf(path)
        if path.is_dir() or path.suffix.lower() == ".json":
            from garrison.sizing.hf_config import read_config

            return read_config(path)
        raise InvalidRequest(
            f"'{arg}' is neither a .gguf file nor a config.json / model directory.", param="model"
        )
    return catalog.find_model(arg)


def native_precision(model: ModelSpec) -> Precision:
    """The precision a model comes in: a GGUF file's own tensors (exact bytes), else its published dtype."""
    if model.file_weights_bytes is not None and model.params:
        bits = model.file_weights_bytes * 8 / model.params
        name = model.file_type or "gguf"
        return Precision(name, bits, bits, "the GGUF file's own tensors (exact bytes)")
    return get_precision(model.dtype)


def choose_precision(model: ModelSpec, quant: str | None) -> Precision:
    """The --quant asked for, the GGUF file's own when it names the same type, else the native one."""
    if quant is None:
        return native_precision(model)
    precision = get_precision(quant)
    if model.file_type is not None and precision.name == model.file_type:
        return native_precision(model)
    return precision


@dataclass(frozen=True)
class HardwareRow:
    """One device type: its fits for each device count tried (in increasing order)."""

    hardware: Hardware
    fits: tuple[Fit, ...]

    @property
    def chosen(self) -> Fit:
        """The fewest devices that fit, else the largest count tried."""
        return next((f for f in self.fits if f.fits), self.fits[-1])


@dataclass(frozen=True)
class SizeReport:
    """Everything `garrison size` prints: the estimate, the hardware table, a recommendation, notes."""

    estimate: Estimate
    rows: tuple[HardwareRow, ...]
    target: Hardware | None
    recommended: Precision | None
    notes: tuple[str, ...]
    headroom: float = HEADROOM


def _notes(model: ModelSpec, workload: Workload, precision: Precision) -> list[str]:
    notes: list[str] = []
    if workload.context > model.context:
        notes.append(f"--context {workload.context} exceeds the model's trained context ({model.context}).")
    if model.sliding_layers:
        notes.append(
            f"{model.sliding_layers} of {model.layers} layers use a {model.sliding_window}-token "
            "sliding window: their KV cache is capped at the window."
        )
    if model.kv_heads < model.heads:
        notes.append(f"Grouped-query attention: {model.kv_heads} KV heads for {model.heads} query heads.")
    if model.is_moe:
        notes.append(
            f"Mixture of experts: {model.experts_active} of {model.experts} experts per token; all "
            "experts are resident, decode reads only the active ones."
        )
    if not workload.flash_attention:
        notes.append(
            "Without flash attention the attention scores (micro-batch x context x heads) are "
            "materialised in the activations."
        )
    if model.file_weights_bytes is not None and precision.name == model.file_type:
        notes.append(f"Weights are the exact tensor bytes of the GGUF file ({model.file_type}).")
    if model.notes:
        notes.append(model.notes)
    return notes


def _row(
    model: ModelSpec, precision: Precision, workload: Workload, hw: Hardware, count: int | None
) -> HardwareRow:
    fits = []
    for n in device_counts(hw, count):
        result = fit(model, precision, workload, hw, n)
        fits.append(replace(result, best_precision=best_precision(model, workload, hw, n)))
    return HardwareRow(hw, tuple(fits))


def size_report(
    model_arg: str,
    *,
    quant: str | None = None,
    context: int | None = None,
    concurrency: int = 1,
    kv_dtype: str = "f16",
    hardware: str | None = None,
    flash_attention: bool = True,
) -> SizeReport:
    """Estimate `model_arg` and fit it to the named hardware (or to the whole catalog)."""
    model = resolve_model(model_arg)
    precision = choose_precision(model, quant)
    workload = Workload(context or default_context(model), concurrency, kv_dtype, flash_attention)
    if hardware:
        target, count = catalog.parse_hardware(hardware)
        rows: tuple[HardwareRow, ...] = (_row(model, precision, workload, target, count),)
        # The estimate is for the devices needed; the recommendation for the devices asked for (else one).
        est = estimate(model, precision, workload, target.kind, count or rows[0].chosen.devices)
        recommended = best_precision(model, workload, target, count or 1)
        return SizeReport(est, rows, target, recommended, tuple(_notes(model, workload, precision)))
    rows = tuple(_row(model, precision, workload, hw, None) for hw in catalog.hardware())
    est = estimate(model, precision, workload, "cuda", 1)
    return SizeReport(est, rows, None, None, tuple(_notes(model, workload, precision)))


def size_report_on(
    model_arg: str,
    devices: list[tuple[Hardware, int]],
    *,
    quant: str | None = None,
    context: int | None = None,
    concurrency: int = 1,
    kv_dtype: str = "f16",
    flash_attention: bool = True,
) -> SizeReport:
    """Estimate `model_arg` on given devices (this machine's, from `detect`); the first one is the target."""
    model = resolve_model(model_arg)
    precision = choose_precision(model, quant)
    workload = Workload(context or default_context(model), concurrency, kv_dtype, flash_attention)
    rows = tuple(_row(model, precision, workload, hw, count) for hw, count in devices)
    target, count = devices[0]
    est = estimate(model, precision, workload, target.kind, count)
    recommended = best_precision(model, workload, target, count)
    return SizeReport(est, rows, target, recommended, tuple(_notes(model, workload, precision)))


@dataclass(frozen=True)
class HereRow:
    """One catalog model on this machine: the largest precision that fits with headroom, and where."""

    model: ModelSpec
    fit: Fit | None


def here_report(machine_hardware: list[tuple[Hardware, int]], context: int | None = None) -> list[HereRow]:
    """For each catalog model, the first of this machine's devices (GPUs first) that holds it, and at what."""
    rows = []
    for model in catalog.models():
        workload = Workload(context or default_context(model))
        found: Fit | None = None
        for hw, count in machine_hardware:
            for name in RECOMMENDABLE:
                candidate = fit(model, get_precision(name), workload, hw, count)
                if candidate.fits_with_headroom:
                    found = replace(candidate, best_precision=get_precision(name))
                    break
            if found:
                break
        rows.append(HereRow(model, found))
    return rows
