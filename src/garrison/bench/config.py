"""What one `garrison bench` run is asked to do, and the parsers for its compact flag syntax."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from garrison.errors import InvalidRequest

Backend = Literal["openai", "ollama"]
Mode = Literal["concurrency", "rate"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str, *, param: str, bare_unit: str = "s") -> float:
    """Seconds from '60s', '500ms', '2m', '1h' or a bare number in `bare_unit`."""
    match = _DURATION.match(text)
    if match is None:
        raise InvalidRequest(
            f"{param}: cannot read {text!r} as a duration (e.g. 60s, 500ms, 2m)", param=param
        )
    unit = match.group(2) or bare_unit
    return float(match.group(1)) * _UNIT_SECONDS[unit]


def parse_concurrency(text: str) -> tuple[int, ...]:
    """Concurrency levels from '1,2,4,8'."""
    levels: list[int] = []
    for part in _split(text):
        if not part.isdigit() or int(part) < 1:
            raise InvalidRequest(f"--concurrency: {part!r} is not a positive integer", param="--concurrency")
        levels.append(int(part))
    return tuple(levels)


def parse_rates(text: str) -> tuple[float, ...]:
    """Request rates (requests/s) from '0.5,1,2'; 'inf' sends every request at once."""
    rates: list[float] = []
    for part in _split(text):
        try:
            rate = float(part)
        except ValueError:
            raise InvalidRequest(f"--rate: {part!r} is not a number", param="--rate") from None
        if not rate > 0:
            raise InvalidRequest(f"--rate: {part!r} must be above 0", param="--rate")
        rates.append(rate)
    return tuple(rates)


def _split(text: str) -> list[str]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise InvalidRequest(f"empty list {text!r}")
    return parts


@dataclass(frozen=True)
class Slo:
    """Service-level objectives a request must all meet to count toward goodput (milliseconds)."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    @classmethod
    def parse(cls, text: str | None) -> Slo | None:
        """Read 'ttft=500ms,tpot=50ms,e2e=10s' (vLLM's 'ttft:500' form and bare milliseconds too)."""
        if text is None or not text.strip() or text.strip().lower() == "none":
            return None
        names = {"ttft": "ttft_ms", "tpot": "tpot_ms", "e2e": "e2e_ms", "e2el": "e2e_ms"}
        values: dict[str, float] = {}
        for part in _split(text):
            key, sep, value = part.replace(":", "=", 1).partition("=")
            name = names.get(key.strip().lower())
            if not sep or name is None:
                raise InvalidRequest(
                    f"--slo: {part!r} should be ttft=, tpot= or e2e= a duration", param="--slo"
                )
            values[name] = parse_duration(value, param="--slo", bare_unit="ms") * 1000.0
        return cls(**values)

    def as_dict(self) -> dict[str, float]:
        """The objectives that are set, by name."""
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass(frozen=True)
class Level:
    """One step of a sweep: a closed-loop concurrency or an open-loop arrival rate."""

    mode: Mode
    value: float

    @property
    def label(self) -> str:
        """Human name of the level, e.g. 'concurrency 4' or 'rate 0.5/s'."""
        if self.mode == "concurrency":
            return f"concurrency {int(self.value)}"
        return "rate inf" if math.isinf(self.value) else f"rate {self.value:g}/s"


@dataclass(frozen=True)
class BenchConfig:
    """Every setting of one benchmark run; `settings()` is what results.json records."""

    url: str
    model: str
    backend: Backend = "openai"
    api_key: str | None = field(default=None, repr=False)
    concurrency: tuple[int, ...] = ()
    rates: tuple[float, ...] = ()
    burstiness: float = 1.0
    requests: int | None = 50
    duration_s: float | None = None
    warmup: int = 1
    input_tokens: int = 128
    input_spread: float = 0.0
    output_tokens: int = 128
    output_spread: float = 0.0
    dataset: Path | None = None
    seed: int = 0
    slo: Slo | None = None
    timeout_s: float = 300.0
    ignore_eos: bool = True

    def __post_init__(self) -> None:
        if self.backend not in ("openai", "ollama"):
            raise InvalidRequest(
                f"--backend must be openai or ollama, not {self.backend!r}", param="--backend"
            )
        if not re.match(r"^https?://", self.url):
            raise InvalidRequest(
                f"--url must start with http:// or https://, got {self.url!r}", param="--url"
            )
        if self.concurrency and self.rates:
            raise InvalidRequest("give --concurrency or --rate, not both", param="--rate")
        if self.requests is None and self.duration_s is None:
            raise InvalidRequest("give --requests or --duration", param="--requests")
        if self.requests is not None and self.requests < 1:
            raise InvalidRequest("--requests must be at least 1", param="--requests")
        if self.duration_s is not None and self.duration_s <= 0:
            raise InvalidRequest("--duration must be above 0", param="--duration")
        if self.burstiness <= 0:
            raise InvalidRequest("--burstiness must be above 0", param="--burstiness")
        if self.input_tokens < 1 or self.output_tokens < 1:
            raise InvalidRequest(
                "--input-tokens and --output-tokens must be at least 1", param="--input-tokens"
            )
        if self.input_spread < 0 or self.output_spread < 0 or self.warmup < 0 or self.timeout_s <= 0:
            raise InvalidRequest("spreads, --warmup and --timeout cannot be negative")
        if self.dataset is not None and not self.dataset.is_file():
            raise InvalidRequest(f"--dataset: no such file {str(self.dataset)!r}", param="--dataset")

    def levels(self) -> list[Level]:
        """The sweep in order; a single concurrency of 1 when neither list is given."""
        if self.rates:
            return [Level("rate", rate) for rate in self.rates]
        return [Level("concurrency", float(c)) for c in (self.concurrency or (1,))]

    def settings(self) -> dict[str, Any]:
        """The run's settings for results.json, with the API key left out."""
        data = asdict(self)
        data.pop("api_key")
        data["api_key_set"] = self.api_key is not None
        data["dataset"] = str(self.dataset) if self.dataset else None
        data["slo"] = self.slo.as_dict() if self.slo else None
        data["concurrency"] = list(self.concurrency)
        data["rates"] = [_json_float(rate) for rate in self.rates]
        return data


def _json_float(value: float) -> float | str:
    return "inf" if math.isinf(value) else value
