"""Flag parsing and validation of `garrison bench` settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from garrison.bench.config import BenchConfig, Level, Slo, parse_concurrency, parse_duration, parse_rates
from garrison.errors import InvalidRequest


@pytest.mark.parametrize(
    ("text", "seconds"), [("60s", 60.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), ("1.5", 1.5)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text, param="--duration") == pytest.approx(seconds)


def test_parse_duration_rejects_garbage() -> None:
    with pytest.raises(InvalidRequest, match="--duration"):
        parse_duration("soon", param="--duration")


def test_parse_levels() -> None:
    assert parse_concurrency("1, 2,4,8") == (1, 2, 4, 8)
    assert parse_rates("0.5,1,inf") == (0.5, 1.0, float("inf"))
    with pytest.raises(InvalidRequest):
        parse_concurrency("1,0")
    with pytest.raises(InvalidRequest):
        parse_rates("fast")
    with pytest.raises(InvalidRequest):
        parse_rates("-1")


def test_slo_forms() -> None:
    assert Slo.parse("ttft=500ms,tpot=50ms") == Slo(ttft_ms=500.0, tpot_ms=50.0)
    assert Slo.parse("ttft:300,e2e=2s") == Slo(ttft_ms=300.0, e2e_ms=2000.0)
    assert Slo.parse("none") is None
    assert Slo(tpot_ms=50.0).as_dict() == {"tpot_ms": 50.0}
    with pytest.raises(InvalidRequest, match="--slo"):
        Slo.parse("latency=1s")


def test_config_levels_and_validation() -> None:
    config = BenchConfig(url="http://127.0.0.1:1", model="m")
    assert config.levels() == [Level("concurrency", 1.0)]
    rates = BenchConfig(url="http://127.0.0.1:1", model="m", rates=(0.5, 2.0))
    assert [level.label for level in rates.levels()] == ["rate 0.5/s", "rate 2/s"]
    with pytest.raises(InvalidRequest, match="not both"):
        BenchConfig(url="http://127.0.0.1:1", model="m", concurrency=(1,), rates=(1.0,))
    with pytest.raises(InvalidRequest, match="--url"):
        BenchConfig(url="127.0.0.1:8400", model="m")
    with pytest.raises(InvalidRequest, match="--requests or --duration"):
        BenchConfig(url="http://127.0.0.1:1", model="m", requests=None)
    with pytest.raises(InvalidRequest, match="--backend"):
        BenchConfig(url="http://127.0.0.1:1", model="m", backend="tgi")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="--dataset"):
        BenchConfig(url="http://127.0.0.1:1", model="m", dataset=Path("/no/such/file.jsonl"))


def test_settings_leave_out_the_api_key() -> None:
    config = BenchConfig(url="http://127.0.0.1:1", model="m", api_key="sk-secret", slo=Slo(ttft_ms=500.0))
    settings = config.settings()
    assert "sk-secret" not in repr(settings)
    assert "sk-secret" not in repr(config)
    assert settings["api_key_set"] is True
    assert settings["slo"] == {"ttft_ms": 500.0}
