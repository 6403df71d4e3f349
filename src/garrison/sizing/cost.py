"""`garrison cost`: self-hosted cost and energy per million output tokens against per-token API prices."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from garrison.errors import InvalidRequest

HOURS_PER_MONTH = 365.25 * 24 / 12  # 730.5 h: an average month
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600
DEFAULT_GRID_G_PER_KWH = (
    480.0  # world average electricity carbon intensity, 2023 (Ember, Global Electricity Review 2024)
)
MILLION = 1_000_000


@dataclass(frozen=True)
class ApiPrice:
    """One API model's list price in USD per million tokens."""

    provider: str
    model: str
    input_per_mtok: float
    output_per_mtok: float
    source: str = ""


@dataclass(frozen=True)
class PriceFile:
    """A dated price list; users edit a copy and pass it with --api."""

    as_of: dt.date
    currency: str
    prices: tuple[ApiPrice, ...]
    path: str


def _parse_prices(data: Any, path: str) -> PriceFile:
    if not isinstance(data, dict) or not isinstance(data.get("prices"), list):
        raise InvalidRequest(f"{path}: expected a mapping with 'as_of' and a 'prices' list.", param="api")
    as_of = data.get("as_of")
    if isinstance(as_of, str):
        try:
            as_of = dt.date.fromisoformat(as_of)
        except ValueError as exc:
            raise InvalidRequest(f"{path}: as_of must be a YYYY-MM-DD date.", param="api") from exc
    if not isinstance(as_of, dt.date):
        raise InvalidRequest(f"{path}: as_of (the date the prices were taken) is required.", param="api")
    prices = []
    for i, entry in enumerate(data["prices"]):
        try:
            prices.append(
                ApiPrice(
                    str(entry["provider"]),
                    str(entry["model"]),
                    float(entry["input"]),
                    float(entry["output"]),
                    str(entry.get("source", "")),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidRequest(
                f"{path}: price #{i + 1} needs provider, model, input and output.", param="api"
            ) from exc
    return PriceFile(as_of, str(data.get("currency", "USD")), tuple(prices), path)


def load_prices(path: str | Path | None = None) -> PriceFile:
    """The shipped price file, or the user's (YAML or JSON, same shape)."""
    if path is None:
        text = (
            resources.files("garrison.sizing").joinpath("data", "api_prices.yaml").read_text(encoding="utf-8")
        )
        return _parse_prices(yaml.safe_load(text), "api_prices.yaml (shipped)")
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
        data = json.loads(text) if file.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise InvalidRequest(f"Cannot read price file '{path}': {exc}", param="api") from exc
    return _parse_prices(data, str(file))


def tokens_per_second_from_bench(path: str | Path) -> float:
    """The best output tokens/s over the levels of a `garrison bench` results.json."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"Cannot read bench results '{path}': {exc}", param="bench") from exc
    levels = data.get("levels") if isinstance(data, dict) else None
    rates = []
    for level in levels if isinstance(levels, list) else []:
        summary = level.get("summary") if isinstance(level, dict) else None
        rate = summary.get("output_tokens_per_s") if isinstance(summary, dict) else None
        if isinstance(rate, int | float) and rate > 0:
            rates.append(float(rate))
    if not rates:
        raise InvalidRequest(
            f"'{path}' has no levels[].summary.output_tokens_per_s above zero.", param="bench"
        )
    return max(rates)


@dataclass(frozen=True)
class CostInputs:
    """The machine and how it is used."""

    hardware_price: float
    months: float
    watts: float
    kwh_price: float
    tokens_per_second: float
    utilization: float = 0.5
    idle_watts: float = 0.0
    grid_g_per_kwh: float = DEFAULT_GRID_G_PER_KWH

    def __post_init__(self) -> None:
        checks = {
            "hardware-price": self.hardware_price >= 0,
            "months": self.months > 0,
            "watts": self.watts >= 0,
            "kwh-price": self.kwh_price >= 0,
            "tokens-per-second": self.tokens_per_second > 0,
            "utilization": 0 < self.utilization <= 1,
            "idle-watts": 0 <= self.idle_watts <= self.watts,
            "grid-intensity": self.grid_g_per_kwh >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise InvalidRequest(f"--{name} is out of range.", param=name.replace("-", "_"))


@dataclass(frozen=True)
class Comparison:
    """Self-hosting against one API model."""

    api: ApiPrice
    ratio: float | None
    breakeven_mtok_per_month: float | None
    breakeven_utilization: float | None


@dataclass(frozen=True)
class CostReport:
    """Cost, energy and CO2 per million output tokens, and the comparison with each API price."""

    inputs: CostInputs
    tokens_per_month: float
    capacity_mtok_per_month: float
    hardware_per_month: float
    energy_kwh_per_month: float
    energy_cost_per_month: float
    cost_per_mtok: float
    energy_kwh_per_mtok: float
    co2_kg_per_mtok: float
    fixed_per_month: float
    marginal_per_mtok: float
    prices: PriceFile
    comparisons: tuple[Comparison, ...]


def compute_cost(inputs: CostInputs, prices: PriceFile) -> CostReport:
    """Amortised hardware + energy over the tokens produced at the given utilization, and the break-even."""
    busy_s = SECONDS_PER_MONTH * inputs.utilization
    tokens = inputs.tokens_per_second * busy_s
    capacity_mtok = inputs.tokens_per_second * SECONDS_PER_MONTH / MILLION
    hardware_month = inputs.hardware_price / inputs.months
    kwh_month = (inputs.watts * busy_s + inputs.idle_watts * (SECONDS_PER_MONTH - busy_s)) / 3.6e6
    energy_cost_month = kwh_month * inputs.kwh_price
    mtok = tokens / MILLION
    kwh_per_mtok = kwh_month / mtok
    # Fixed: amortisation plus idling all month; marginal: the extra draw while generating a million tokens.
    fixed = hardware_month + inputs.idle_watts * HOURS_PER_MONTH / 1000 * inputs.kwh_price
    marginal = (
        (inputs.watts - inputs.idle_watts) * (MILLION / inputs.tokens_per_second) / 3.6e6 * inputs.kwh_price
    )
    cost_per_mtok = (hardware_month + energy_cost_month) / mtok
    comparisons = []
    for api in prices.prices:
        ratio = cost_per_mtok / api.output_per_mtok if api.output_per_mtok > 0 else None
        if api.output_per_mtok > marginal:
            volume = fixed / (api.output_per_mtok - marginal)
            comparisons.append(Comparison(api, ratio, volume, volume / capacity_mtok))
        else:
            comparisons.append(Comparison(api, ratio, None, None))
    return CostReport(
        inputs=inputs,
        tokens_per_month=tokens,
        capacity_mtok_per_month=capacity_mtok,
        hardware_per_month=hardware_month,
        energy_kwh_per_month=kwh_month,
        energy_cost_per_month=energy_cost_month,
        cost_per_mtok=cost_per_mtok,
        energy_kwh_per_mtok=kwh_per_mtok,
        co2_kg_per_mtok=kwh_per_mtok * inputs.grid_g_per_kwh / 1000,
        fixed_per_month=fixed,
        marginal_per_mtok=marginal,
        prices=prices,
        comparisons=tuple(comparisons),
    )
