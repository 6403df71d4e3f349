"""The shipped catalogs: complete, sourced, and consistent with the published parameter counts."""

from __future__ import annotations

import pytest

from garrison.errors import InvalidRequest, NotFound
from garrison.sizing import catalog
from garrison.sizing.precisions import PRECISIONS, get_precision, kv_dtype_bytes

REQUIRED_MODELS = [
    "llama-2-7b",
    "llama-2-13b",
    "llama-2-70b",
    "llama-3.1-8b",
    "llama-3.1-70b",
    "llama-3.1-405b",
    "mistral-7b",
    "mixtral-8x7b",
    "codestral-22b",
    "codellama-7b",
    "codellama-13b",
    "codellama-34b",
    "falcon-7b",
    "falcon-40b",
    "falcon-180b",
    "vicuna-13b",
    "qwen2.5-0.5b",
    "qwen2.5-1.5b",
    "qwen2.5-3b",
    "qwen2.5-7b",
    "qwen2.5-14b",
    "qwen2.5-32b",
    "qwen2.5-72b",
    "gemma-3-270m",
    "gemma-3-1b",
    "gemma-3-4b",
    "gemma-3-12b",
    "gemma-3-27b",
    "phi-3-mini",
    "phi-3-medium",
    "dbrx",
    "smollm2-135m",
    "smollm2-360m",
    "smollm2-1.7b",
]

REQUIRED_HARDWARE = [
    "gtx-1080-ti",
    "rtx-2080-ti",
    "rtx-3090",
    "rtx-4090",
    "rtx-a6000",
    "rtx-6000-ada",
    "l4",
    "t4",
    "v100s",
    "a100-40gb",
    "a100-80gb",
    "h100-80gb",
    "h200",
    "apple-m2-pro-32gb",
    "apple-m2-max-64gb",
    "apple-m3-pro-36gb",
    "apple-m3-max-128gb",
    "cpu-ddr4-32gb",
]


def test_catalog_has_every_model_the_issue_names_each_with_a_source() -> None:
    ids = {m.id for m in catalog.models()}
    assert set(REQUIRED_MODELS) <= ids
    for model in catalog.models():
        assert model.source.startswith("https://huggingface.co/") and model.source.endswith("config.json")
        assert model.kv_heads <= model.heads and model.heads % model.kv_heads == 0


@pytest.mark.parametrize(
    ("model_id", "published"),
    [
        # Totals published on the model cards / safetensors metadata.
        ("llama-2-7b", 6_738_415_616),
        ("llama-3.1-8b", 8_030_261_248),
        ("llama-3.1-70b", 70_553_706_496),
        ("llama-3.1-405b", 405_853_388_800),
        ("mistral-7b", 7_248_023_552),
        ("qwen2.5-0.5b", 494_032_768),
        ("qwen2.5-7b", 7_615_616_512),
        ("phi-3-mini", 3_821_079_552),
        ("smollm2-135m", 134_515_008),
    ],
)
def test_derived_parameter_counts_equal_published_totals(model_id: str, published: int) -> None:
    assert catalog.find_model(model_id).params == published


@pytest.mark.parametrize(
    ("model_id", "approx"),
    [
        ("llama-2-13b", 13.02e9),
        ("llama-2-70b", 68.98e9),
        ("codestral-22b", 22.25e9),
        ("codellama-34b", 33.74e9),
        ("qwen2.5-72b", 72.71e9),
        ("gemma-3-1b", 1.0e9),
        ("gemma-3-270m", 268e6),
        ("phi-3-medium", 13.96e9),
        ("smollm2-1.7b", 1.71e9),
        ("falcon-7b", 6.92e9),
        ("falcon-40b", 41.3e9),
    ],
)
def test_derived_parameter_counts_are_close_to_published(model_id: str, approx: float) -> None:
    assert catalog.find_model(model_id).params == pytest.approx(approx, rel=0.005)


def test_hardware_catalog_has_every_device_the_issue_names() -> None:
    ids = {h.id for h in catalog.hardware()}
    assert set(REQUIRED_HARDWARE) <= ids
    for hw in catalog.hardware():
        assert hw.source.startswith("https://")
        assert hw.bandwidth_bytes_per_s and hw.flops and hw.memory_bytes > 0
    h100 = catalog.find_hardware("h100")
    assert (
        h100.memory_bytes == 80 * 1024**3 and h100.bandwidth_bytes_per_s == 3.35e12 and h100.flops == 989e12
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Llama 3.1 70B", "llama-3.1-70b"),
        ("meta-llama/Llama-3.1-70B-Instruct", "llama-3.1-70b"),
        ("MIXTRAL-8x7B", "mixtral-8x7b"),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2-135m"),
    ],
)
def test_model_lookup_accepts_names_and_repo_ids(name: str, expected: str) -> None:
    assert catalog.find_model(name).id == expected


def test_hardware_lookup_and_device_counts() -> None:
    assert catalog.parse_hardware("4090") == (catalog.find_hardware("rtx-4090"), None)
    assert catalog.parse_hardware("2x RTX A6000") == (catalog.find_hardware("rtx-a6000"), 2)
    assert catalog.parse_hardware("8 x h100")[1] == 8
    with pytest.raises(InvalidRequest, match="single-device"):
        catalog.parse_hardware("2x apple-m3-max-128gb")


def test_unknown_names_are_not_found_errors_naming_them() -> None:
    with pytest.raises(NotFound, match="llama-9"):
        catalog.find_model("llama-9")
    with pytest.raises(NotFound, match="tpu-v9"):
        catalog.find_hardware("tpu-v9")


def test_precisions_carry_their_block_scales() -> None:
    assert get_precision("Q8_0").bits == 8.5
    assert get_precision("q4_0").bits == 4.5
    assert get_precision("q6_k").bits == pytest.approx(210 * 8 / 256)
    assert get_precision("bf16").bits == 16 and get_precision("bfloat16").name == "bf16"
    assert get_precision("awq").bits == pytest.approx(4 + 20 / 128)
    assert get_precision("gptq").embedding_bits == 16
    assert get_precision("nf4").bits == 4.5
    assert [p.bits for p in PRECISIONS] == sorted((p.bits for p in PRECISIONS), reverse=True)
    assert kv_dtype_bytes("q8_0") == 34 / 32
    with pytest.raises(InvalidRequest, match="Unknown precision 'q9'"):
        get_precision("q9")
