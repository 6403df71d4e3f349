"""The memory arithmetic reproduces the issue's figures and hand-computed KV caches from published configs."""

from __future__ import annotations

import pytest

from garrison.sizing import catalog
from garrison.sizing.estimate import RUNTIMES, Workload, activations_per_device, estimate, fit
from garrison.sizing.planner import size_report
from garrison.sizing.precisions import get_precision

GB = 1e9


def test_llama_31_70b_weights_at_64_and_16_bit_match_the_bits_over_8_rule() -> None:
    model = catalog.find_model("llama-3.1-70b")
    assert model.weights_bytes(get_precision("fp64")) == pytest.approx(560 * GB, rel=0.01)
    assert model.weights_bytes(get_precision("fp16")) == pytest.approx(140 * GB, rel=0.01)
    assert model.weights_bytes(get_precision("fp64")) == 4 * model.weights_bytes(get_precision("fp16"))


def test_falcon_40b_bf16_needs_nearly_90_gb_and_does_not_fit_one_a100_80gb() -> None:
    model = catalog.find_model("falcon-40b")
    bf16 = get_precision("bf16")
    workload = Workload(context=2048)
    one = fit(model, bf16, workload, catalog.find_hardware("a100-80gb"), 1)
    assert 85 * GB <= one.estimate.total_bytes <= 92 * GB
    assert one.estimate.total_bytes > one.hardware.memory_bytes
    assert not one.fits


def test_falcon_40b_bf16_runs_on_two_48_gb_cards() -> None:
    model = catalog.find_model("falcon-40b")
    two = fit(model, get_precision("bf16"), Workload(context=2048), catalog.find_hardware("rtx-a6000"), 2)
    assert two.fits and two.fits_with_headroom
    assert two.estimate.per_device_bytes < 48 * 1024**3


@pytest.mark.parametrize(
    ("model_id", "per_token"),
    [
        # 2 x layers x kv_heads x head_dim x 2 bytes, from each published config.json
        ("llama-2-7b", 2 * 32 * 32 * 128 * 2),  # multi-head: 32 KV heads = 512 KiB/token
        ("llama-3.1-70b", 2 * 80 * 8 * 128 * 2),  # grouped-query: 8 KV heads for 64 query heads
        ("mistral-7b", 2 * 32 * 8 * 128 * 2),  # grouped-query
        ("falcon-7b", 2 * 32 * 1 * 64 * 2),  # multi-query: one KV head
        ("codestral-22b", 2 * 56 * 8 * 128 * 2),  # explicit head_dim 128 (hidden/heads would also be 128)
        ("gemma-3-27b", 2 * 62 * 16 * 128 * 2),  # explicit head_dim 128 (hidden/heads = 168)
        ("smollm2-135m", 2 * 30 * 3 * 64 * 2),
    ],
)
def test_kv_cache_per_token_matches_hand_computation(model_id: str, per_token: int) -> None:
    model = catalog.find_model(model_id)
    assert model.kv_bytes_per_token(2.0) == per_token
    est = estimate(model, get_precision("fp16"), Workload(context=4096, concurrency=3))
    if not model.sliding_layers:
        assert est.kv_cache_bytes == per_token * 4096 * 3


def test_llama_31_70b_kv_cache_at_full_context_is_about_43_gb() -> None:
    est = estimate(catalog.find_model("llama-3.1-70b"), get_precision("fp16"), Workload(context=131072))
    assert est.kv_cache_bytes == 327_680 * 131_072  # 42.9 GB


def test_sliding_window_layers_cap_their_cache_at_the_window() -> None:
    model = catalog.find_model("gemma-3-27b")  # 62 layers: 10 global, 52 with a 1024-token window
    assert model.sliding_layers == 52
    per_layer_token = 2 * 16 * 128 * 2
    expected = per_layer_token * (10 * 32768 + 52 * 1024)
    assert model.kv_cache_bytes(32768, 1, 2.0) == expected
    assert model.kv_cache_bytes(512, 1, 2.0) == per_layer_token * 62 * 512  # inside the window: no saving


def test_kv_dtype_q8_0_and_q4_0_include_block_scales() -> None:
    model = catalog.find_model("llama-3.1-8b")
    f16 = estimate(model, get_precision("fp16"), Workload(context=8192)).kv_cache_bytes
    q8 = estimate(model, get_precision("fp16"), Workload(context=8192, kv_dtype="q8_0")).kv_cache_bytes
    q4 = estimate(model, get_precision("fp16"), Workload(context=8192, kv_dtype="q4_0")).kv_cache_bytes
    assert q8 == pytest.approx(f16 * 34 / 64)
    assert q4 == pytest.approx(f16 * 18 / 64)


def test_moe_reports_total_and_active_parameters() -> None:
    mixtral = catalog.find_model("mixtral-8x7b")
    assert mixtral.params == pytest.approx(46.70e9, rel=0.002)
    assert mixtral.active_params == pytest.approx(12.88e9, rel=0.002)
    dbrx = catalog.find_model("dbrx")
    assert dbrx.params == pytest.approx(132e9, rel=0.01)
    assert dbrx.active_params == pytest.approx(36e9, rel=0.02)


def test_moe_decode_reads_only_active_weights() -> None:
    model = catalog.find_model("mixtral-8x7b")
    h100 = catalog.find_hardware("h100")
    result = fit(model, get_precision("q4_k_m"), Workload(context=1), h100, 1)
    active_bytes = model.active_weights_bytes(get_precision("q4_k_m"))
    assert active_bytes < model.weights_bytes(get_precision("q4_k_m")) / 3
    assert result.decode_tokens_per_s_max == pytest.approx(
        3.35e12 / (active_bytes + result.estimate.kv_cache_bytes)
    )


def test_decode_bound_is_bandwidth_over_bytes_per_token() -> None:
    model = catalog.find_model("llama-3.1-8b")
    result = fit(model, get_precision("fp16"), Workload(context=4096), catalog.find_hardware("rtx-4090"), 1)
    bytes_per_token = model.weights_bytes(get_precision("fp16")) + 131_072 * 4096
    assert result.decode_tokens_per_s_max == pytest.approx(1008e9 / bytes_per_token)
    assert 55 < result.decode_tokens_per_s_max < 65  # ~60 tok/s: the known ceiling for 8B fp16 on a 4090
    assert result.prefill_tokens_per_s_max is not None and result.prefill_tokens_per_s_max > 1000


def test_multi_device_splits_weights_and_repeats_per_device_overhead() -> None:
    model = catalog.find_model("llama-3.1-70b")
    one = estimate(model, get_precision("fp16"), Workload(context=4096), "cuda", 1)
    four = estimate(model, get_precision("fp16"), Workload(context=4096), "cuda", 4)
    assert four.per_device_bytes < one.per_device_bytes / 3.5
    assert four.total_bytes > one.total_bytes  # four CUDA contexts and four compute buffers
    assert four.activations_bytes == 4 * one.activations_bytes


def test_flash_attention_off_materialises_scores() -> None:
    model = catalog.find_model("llama-3.1-8b")
    on = activations_per_device(model, Workload(context=32768), RUNTIMES["cuda"])
    off = activations_per_device(model, Workload(context=32768, flash_attention=False), RUNTIMES["cuda"])
    assert off - on > 512 * 32768 * 32 * 4  # at least the f32 scores of one micro-batch


def test_cpu_runtime_counts_only_the_logits_rows_produced() -> None:
    model = catalog.find_model("llama-3.1-8b")
    gpu = activations_per_device(model, Workload(context=2048), RUNTIMES["cuda"])
    cpu = activations_per_device(model, Workload(context=2048), RUNTIMES["cpu"])
    assert gpu - cpu > 500 * 128256 * 4 * 0.9


def test_largest_precision_with_headroom() -> None:
    assert size_report("llama-3.1-8b", hardware="rtx-4090").recommended.name == "fp16"  # type: ignore[union-attr]
    # 16 GB of fp16 weights cannot fit a 16 GB T4; 8.5 GB of q8_0 can.
    assert size_report("llama-3.1-8b", hardware="t4").recommended.name == "q8_0"  # type: ignore[union-attr]
    assert size_report("llama-3.1-70b", hardware="rtx-4090").recommended is None  # q2_k is 29.5 GB
    assert size_report("llama-3.1-70b", hardware="4x rtx-4090").recommended.name == "q8_0"  # type: ignore[union-attr]


def test_apple_usable_memory_is_three_quarters() -> None:
    m3 = catalog.find_hardware("apple-m3-max-128gb")
    assert m3.usable_bytes == int(128 * 1024**3 * 0.75)
    result = fit(catalog.find_model("llama-3.1-70b"), get_precision("q8_0"), Workload(context=4096), m3, 1)
    assert result.estimate.per_device_bytes < m3.memory_bytes
    assert result.fits is (result.estimate.per_device_bytes <= m3.usable_bytes)


def test_invalid_workload_is_a_clear_error() -> None:
    from garrison.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="--context"):
        Workload(context=0)
    with pytest.raises(InvalidRequest, match="KV-cache dtype"):
        Workload(context=10, kv_dtype="q3")
