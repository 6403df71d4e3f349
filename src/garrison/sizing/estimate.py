"""Memory and speed arithmetic: weights + KV cache + activations + runtime overhead, per device."""

from __future__ import annotations

from dataclasses import dataclass

from garrison.errors import InvalidRequest
from garrison.sizing.architecture import ModelSpec
from garrison.sizing.catalog import Hardware
from garrison.sizing.precisions import RECOMMENDABLE, Precision, get_precision, kv_dtype_bytes

MIB = 1024**2
HEADROOM = 0.10  # "fits with headroom": the estimate uses at most 90% of the usable memory
UBATCH = 512  # tokens per prefill micro-batch (llama.cpp's default n_ubatch)
DEFAULT_CONTEXT = 4096  # default --context, capped at the model's trained context
FP32 = 4


@dataclass(frozen=True)
class Runtime:
    """What the serving runtime adds on each device beyond weights, KV cache and activations."""

    kind: str
    fixed_bytes: int
    slack: float
    worst_case_logits: bool
    description: str


RUNTIMES: dict[str, Runtime] = {
    "cuda": Runtime(
        "cuda",
        768 * MIB,
        0.05,
        True,
        "CUDA context, cuBLAS workspace and kernels (0.75 GiB per device) + 5% for allocator fragmentation "
        "and framework buffers; compute buffers are committed for the worst case",
    ),
    "metal": Runtime(
        "metal",
        256 * MIB,
        0.02,
        True,
        "Metal device, command queues and shader library (0.25 GiB) + 2% slack; compute buffers committed",
    ),
    "cpu": Runtime(
        "cpu",
        32 * MIB,
        0.0,
        False,
        "llama.cpp on the host: vocabulary tables, graph metadata and thread pool (32 MiB); the OS commits "
        "buffer pages on first touch, so only the logits rows actually produced count",
    ),
}


@dataclass(frozen=True)
class Workload:
    """What the model must hold: context per sequence, sequences at once, KV dtype, attention kernel."""

    context: int
    concurrency: int = 1
    kv_dtype: str = "f16"
    flash_attention: bool = True
    ubatch: int = UBATCH

    def __post_init__(self) -> None:
        if self.context < 1:
            raise InvalidRequest(f"--context must be at least 1, got {self.context}.", param="context")
        if self.concurrency < 1:
            raise InvalidRequest(
                f"--concurrency must be at least 1, got {self.concurrency}.", param="concurrency"
            )
        kv_dtype_bytes(self.kv_dtype)


def default_context(model: ModelSpec) -> int:
    """The context sized when none is given: 4096 tokens, or the model's own if shorter."""
    return min(model.context, DEFAULT_CONTEXT)


@dataclass(frozen=True)
class Estimate:
    """Bytes needed to serve `model` at `precision` under `workload` on `devices` devices of one runtime."""

    model: ModelSpec
    precision: Precision
    workload: Workload
    runtime: Runtime
    devices: int
    weights_bytes: int
    kv_bytes_per_token: int
    kv_cache_bytes: int
    activations_bytes: int
    overhead_bytes: int
    per_device_bytes: int

    @property
    def total_bytes(self) -> int:
        """Everything, summed over the devices."""
        return self.weights_bytes + self.kv_cache_bytes + self.activations_bytes + self.overhead_bytes


def activations_per_device(model: ModelSpec, workload: Workload, runtime: Runtime) -> int:
    """Peak compute-buffer bytes of one forward pass over a prefill micro-batch (llama.cpp's graph shape)."""
    # The graph allocator reuses memory between phases: the larger of the logits phase and the attention
    # phase counts, plus the hidden-state and feed-forward work tensors that live alongside either.
    ubatch = min(workload.ubatch, workload.context * workload.concurrency)
    global_layers = model.layers - model.sliding_layers
    span = (
        workload.context if global_layers else min(workload.context, model.sliding_window or workload.context)
    )
    if workload.flash_attention:
        attention = ubatch * span * 2  # the f16 mask; scores stay in on-chip tiles
    else:
        # f32 scores per head, their f16 copy for the AV product, and the f32 mask.
        attention = ubatch * span * (6 * model.heads + FP32)
    rows = ubatch if runtime.worst_case_logits else workload.concurrency
    logits = rows * model.vocab * FP32
    ffn = (model.expert_intermediate or model.intermediate) * max(1, model.experts_active)
    work = ubatch * FP32 * (4 * model.hidden + 3 * ffn)
    return max(logits, attention) + work


def estimate(
    model: ModelSpec,
    precision: Precision,
    workload: Workload,
    runtime: str | Runtime = "cuda",
    devices: int = 1,
) -> Estimate:
    """Size `model`: weights and KV cache split across `devices`, activations and overhead on each."""
    rt = RUNTIMES[runtime] if isinstance(runtime, str) else runtime
    if devices < 1:
        raise InvalidRequest(f"device count must be at least 1, got {devices}.", param="hardware")
    element = kv_dtype_bytes(workload.kv_dtype)
    weights = model.weights_bytes(precision)
    kv = model.kv_cache_bytes(workload.context, workload.concurrency, element)
    act = activations_per_device(model, workload, rt)
    shard = (weights + kv) / devices + act
    overhead_each = rt.fixed_bytes + rt.slack * shard
    return Estimate(
        model=model,
        precision=precision,
        workload=workload,
        runtime=rt,
        devices=devices,
        weights_bytes=weights,
        kv_bytes_per_token=round(model.kv_bytes_per_token(element)),
        kv_cache_bytes=kv,
        activations_bytes=act * devices,
        overhead_bytes=round(overhead_each * devices),
        per_device_bytes=round(shard + overhead_each),
    )


def decode_tokens_per_s_max(est: Estimate, hw: Hardware) -> float | None:
    """Upper bound on decode tokens/s: bandwidth / bytes read per step (active weights + full KV cache)."""
    # Ideal tensor parallelism: bandwidth adds up over devices. A layer split (llama.cpp's default) runs a
    # single stream at one device's speed.
    if not hw.bandwidth_bytes_per_s:
        return None
    bytes_per_step = est.model.active_weights_bytes(est.precision) + est.kv_cache_bytes
    return est.workload.concurrency * est.devices * hw.bandwidth_bytes_per_s / bytes_per_step


def prefill_tokens_per_s_max(est: Estimate, hw: Hardware) -> float | None:
    """Upper bound on prefill tokens/s: peak FLOP/s / (2 x active params + attention at half the context)."""
    if not hw.flops:
        return None
    per_token = 2.0 * est.model.active_params + est.model.attention_flops_per_token(est.workload.context // 2)
    return est.devices * hw.flops / per_token


@dataclass(frozen=True)
class Fit:
    """Whether an estimate fits `devices` devices of `hardware`, and how fast it could run there."""

    hardware: Hardware
    devices: int
    estimate: Estimate
    decode_tokens_per_s_max: float | None
    prefill_tokens_per_s_max: float | None
    best_precision: Precision | None = None

    @property
    def memory_bytes(self) -> int:
        """Memory of all devices together, as the vendor states it."""
        return self.hardware.memory_bytes * self.devices

    @property
    def fits(self) -> bool:
        """The per-device need is within each device's usable memory."""
        return self.estimate.per_device_bytes <= self.hardware.usable_bytes

    @property
    def fits_with_headroom(self) -> bool:
        """The per-device need leaves at least HEADROOM of the usable memory free."""
        return self.estimate.per_device_bytes <= (1 - HEADROOM) * self.hardware.usable_bytes


def fit(model: ModelSpec, precision: Precision, workload: Workload, hw: Hardware, devices: int) -> Fit:
    """Estimate `model` on `devices` x `hw` (the device kind picks the runtime overhead)."""
    est = estimate(model, precision, workload, hw.kind, devices)
    return Fit(hw, devices, est, decode_tokens_per_s_max(est, hw), prefill_tokens_per_s_max(est, hw))


def best_precision(model: ModelSpec, workload: Workload, hw: Hardware, devices: int) -> Precision | None:
    """The largest recommendable precision that fits `devices` x `hw` with HEADROOM to spare."""
    for name in RECOMMENDABLE:
        if fit(model, get_precision(name), workload, hw, devices).fits_with_headroom:
            return get_precision(name)
    return None


def device_counts(hw: Hardware, explicit: int | None) -> list[int]:
    """The counts to try: the one asked for, or 1..max_devices (1, 2, 4, 8 and all between)."""
    return [explicit] if explicit else list(range(1, hw.max_devices + 1))
