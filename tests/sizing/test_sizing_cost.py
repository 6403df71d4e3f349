"""`garrison cost` arithmetic, bench results and price files, checked against hand computations."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from garrison.errors import InvalidRequest
from garrison.sizing.cost import (
    HOURS_PER_MONTH,
    ApiPrice,
    CostInputs,
    PriceFile,
    compute_cost,
    load_prices,
    tokens_per_second_from_bench,
)

ONE_API = PriceFile(dt.date(2025, 7, 1), "USD", (ApiPrice("Acme", "big", 1.0, 10.0),), "test")


def test_cost_per_million_tokens_by_hand() -> None:
    # $2,000 over 24 months; 450 W while generating; $0.30/kWh; 50 tok/s; busy half the month.
    inputs = CostInputs(
        hardware_price=2000, months=24, watts=450, kwh_price=0.30, tokens_per_second=50, utilization=0.5
    )
    report = compute_cost(inputs, ONE_API)
    busy_hours = HOURS_PER_MONTH * 0.5  # 365.25 h
    tokens = 50 * busy_hours * 3600  # 65.7 M
    kwh = 0.450 * busy_hours  # 164.4 kWh
    expected = (2000 / 24 + kwh * 0.30) / (tokens / 1e6)
    assert report.tokens_per_month == pytest.approx(tokens)
    assert report.energy_kwh_per_month == pytest.approx(kwh)
    assert report.cost_per_mtok == pytest.approx(expected)
    assert report.cost_per_mtok == pytest.approx(2.019, abs=0.01)
    # Energy per million tokens: 1e6 / 50 s at 450 W = 2.5 kWh; CO2 at 480 g/kWh = 1.2 kg.
    assert report.energy_kwh_per_mtok == pytest.approx(2.5)
    assert report.co2_kg_per_mtok == pytest.approx(1.2)


def test_breakeven_volume_by_hand() -> None:
    inputs = CostInputs(hardware_price=2400, months=24, watts=360, kwh_price=0.25, tokens_per_second=100)
    report = compute_cost(inputs, ONE_API)
    marginal = 0.360 * (1e6 / 100 / 3600) * 0.25  # $0.25 per million tokens of energy
    assert report.marginal_per_mtok == pytest.approx(marginal)
    (comparison,) = report.comparisons
    volume = 100 / (10.0 - marginal)  # $100/month fixed / ($10 - $0.25) per million
    assert comparison.breakeven_mtok_per_month == pytest.approx(volume)
    assert comparison.breakeven_utilization == pytest.approx(volume / (100 * HOURS_PER_MONTH * 3600 / 1e6))
    # At exactly the break-even volume, self-hosting and the API cost the same.
    at = CostInputs(2400, 24, 360, 0.25, 100, utilization=comparison.breakeven_utilization)
    assert compute_cost(at, ONE_API).cost_per_mtok == pytest.approx(10.0)


def test_idle_power_is_a_fixed_cost() -> None:
    base = compute_cost(CostInputs(1000, 10, 300, 0.2, 20, utilization=0.25), ONE_API)
    idle = compute_cost(CostInputs(1000, 10, 300, 0.2, 20, utilization=0.25, idle_watts=60), ONE_API)
    assert idle.fixed_per_month - base.fixed_per_month == pytest.approx(0.060 * HOURS_PER_MONTH * 0.2)
    assert idle.cost_per_mtok > base.cost_per_mtok


def test_api_cheaper_than_energy_never_breaks_even() -> None:
    cheap = PriceFile(dt.date(2025, 7, 1), "USD", (ApiPrice("Acme", "tiny", 0.01, 0.01),), "test")
    report = compute_cost(CostInputs(5000, 12, 700, 0.40, 5), cheap)
    assert report.comparisons[0].breakeven_mtok_per_month is None


def test_bench_results_take_the_best_level(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    levels = [
        {"concurrency": c, "summary": {"output_tokens_per_s": r}} for c, r in ((1, 31.5), (4, 88.25), (8, 70))
    ]
    path.write_text(json.dumps({"levels": levels}))
    assert tokens_per_second_from_bench(path) == 88.25
    path.write_text(json.dumps({"levels": []}))
    with pytest.raises(InvalidRequest, match="output_tokens_per_s"):
        tokens_per_second_from_bench(path)


def test_shipped_price_file_is_dated_and_complete() -> None:
    prices = load_prices()
    assert prices.as_of == dt.date(2025, 7, 1)
    assert len(prices.prices) >= 10
    assert all(p.output_per_mtok >= p.input_per_mtok > 0 for p in prices.prices)
    assert all(p.source.startswith("https://") for p in prices.prices)


def test_user_price_file_json_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "prices.json"
    good.write_text(
        json.dumps(
            {"as_of": "2026-01-15", "prices": [{"provider": "Me", "model": "m", "input": 0.5, "output": 1.5}]}
        )
    )
    loaded = load_prices(good)
    assert loaded.as_of == dt.date(2026, 1, 15) and loaded.prices[0].output_per_mtok == 1.5
    undated = tmp_path / "undated.yaml"
    undated.write_text("prices: []\n")
    with pytest.raises(InvalidRequest, match="as_of"):
        load_prices(undated)


def test_inputs_out_of_range_are_rejected() -> None:
    with pytest.raises(InvalidRequest, match="--utilization"):
        CostInputs(1000, 12, 300, 0.2, 20, utilization=1.5)
    with pytest.raises(InvalidRequest, match="--months"):
        CostInputs(1000, 0, 300, 0.2, 20)
