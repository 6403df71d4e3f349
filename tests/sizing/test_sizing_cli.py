"""`garrison size` and `garrison cost` through Typer: the JSON contract, tables, and usage errors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from garrison.cli import sizing


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def _root() -> None:
        """Root."""

    sizing.register(root)
    return root


runner = CliRunner()


def _json(app: typer.Typer, *args: str) -> dict:  # type: ignore[type-arg]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_size_json_contract(app: typer.Typer) -> None:
    data = _json(app, "size", "llama-3.1-70b", "--quant", "fp16")
    for key in ("params", "weights_bytes", "kv_cache_bytes", "overhead_bytes", "total_bytes", "hardware"):
        assert key in data
    assert data["params"] == 70_553_706_496
    assert data["weights_bytes"] == pytest.approx(141.1e9, rel=0.001)
    assert data["total_bytes"] == (
        data["weights_bytes"] + data["kv_cache_bytes"] + data["activations_bytes"] + data["overhead_bytes"]
    )
    rows = data["hardware"]
    assert {"name", "devices", "memory_bytes", "fits", "decode_tokens_per_s_max"} <= set(rows[0])
    h100 = {r["devices"]: r for r in rows if r["id"] == "h100-80gb"}
    assert sorted(h100) == list(range(1, 9))
    assert not h100[1]["fits"] and h100[2]["fits"]
    assert h100[2]["memory_bytes"] == 2 * 80 * 1024**3


def test_size_with_explicit_device_count(app: typer.Typer) -> None:
    data = _json(app, "size", "falcon-40b", "--quant", "bf16", "--hardware", "2x rtx-a6000")
    assert data["devices"] == 2 and data["precision"] == "bf16"
    (row,) = data["hardware"]
    assert row["devices"] == 2 and row["fits"] is True
    single = _json(app, "size", "falcon-40b", "--quant", "bf16", "--hardware", "1x a100-80gb")
    assert single["hardware"][0]["fits"] is False


def test_size_context_concurrency_and_kv_dtype_scale_the_cache(app: typer.Typer) -> None:
    base = _json(app, "size", "llama-3.1-8b", "--context", "8192", "--hardware", "h100")
    more = _json(
        app,
        "size",
        "llama-3.1-8b",
        "--context",
        "16384",
        "--concurrency",
        "4",
        "--kv-dtype",
        "q8_0",
        "--hardware",
        "h100",
    )
    assert base["kv_cache_bytes"] == 131_072 * 8192
    assert more["kv_cache_bytes"] == pytest.approx(base["kv_cache_bytes"] * 2 * 4 * 34 / 64)


def test_size_table_shows_the_breakdown_and_recommendation(app: typer.Typer) -> None:
    result = runner.invoke(app, ["size", "mixtral-8x7b", "--hardware", "h100"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "KV cache per token" in result.output and "Total" in result.output
    assert "12.88B active" in result.output
    assert "Largest precision that fits H100 80GB SXM with 10% headroom: q8_0" in result.output


def test_size_reads_a_config_json_path(app: typer.Typer, tmp_path: Path) -> None:
    config = {
        "model_type": "mistral",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_attention_heads": 32,
        "num_hidden_layers": 32,
        "num_key_value_heads": 8,
        "vocab_size": 32768,
        "max_position_embeddings": 32768,
        "torch_dtype": "bfloat16",
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    data = _json(app, "size", str(tmp_path), "--hardware", "rtx-4090")
    assert data["params"] == 7_248_023_552 and data["precision"] == "bf16"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["size", "no-such-model"], "Unknown model 'no-such-model'"),
        (["size", "llama-3.1-8b", "--hardware", "tpu-v9"], "Unknown hardware 'tpu-v9'"),
        (["size", "llama-3.1-8b", "--quant", "q9_z"], "Unknown precision 'q9_z'"),
        (["size", "llama-3.1-8b", "--kv-dtype", "q3"], "Unknown KV-cache dtype 'q3'"),
        (["size"], "give a MODEL"),
        (["size", "--here", "--hardware", "h100"], "drop --hardware"),
        (
            ["cost", "--hardware-price", "1", "--months", "1", "--watts", "1", "--kwh-price", "1"],
            "exactly one",
        ),
    ],
)
def test_bad_input_is_a_usage_error_with_exit_code_2(app: typer.Typer, args: list[str], message: str) -> None:
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_cost_from_bench_results(app: typer.Typer, tmp_path: Path) -> None:
    bench = tmp_path / "results.json"
    bench.write_text(
        json.dumps(
            {
                "levels": [
                    {"summary": {"output_tokens_per_s": 40.0}},
                    {"summary": {"output_tokens_per_s": 100.0}},
                ]
            }
        )
    )
    data = _json(
        app,
        "cost",
        "--hardware-price",
        "2400",
        "--months",
        "24",
        "--watts",
        "360",
        "--kwh-price",
        "0.25",
        "--utilization",
        "1",
        "--bench",
        str(bench),
    )
    assert data["inputs"]["tokens_per_second"] == 100.0
    assert data["prices_as_of"] == "2025-07-01"
    expected = (100 + 0.36 * 730.5 * 0.25) / (100 * 730.5 * 3600 / 1e6)
    assert data["cost_usd_per_mtok"] == pytest.approx(expected, abs=1e-4)
    assert all("breakeven_mtok_per_month" in row for row in data["api"])


def test_cost_table(app: typer.Typer) -> None:
    result = runner.invoke(
        app,
        [
            "cost",
            "--hardware-price",
            "1600",
            "--months",
            "36",
            "--watts",
            "350",
            "--kwh-price",
            "0.15",
            "--tokens-per-second",
            "60",
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "per million output tokens" in result.output and "claude-sonnet-4" in result.output
