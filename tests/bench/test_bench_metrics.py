"""Metric formulas on hand-made request timings: vLLM names first, GuideLLM's under their own."""

from __future__ import annotations

import numpy as np
import pytest

from garrison.bench.client import RequestRecord
from garrison.bench.config import Slo
from garrison.bench.metrics import (
    describe,
    e2e_ms,
    guidellm_itl_ms,
    guidellm_tpot_ms,
    itl_ms,
    meets_slo,
    request_row,
    summarise,
    tpot_ms,
    ttft_ms,
)


def record(
    sent: float, chunks: list[float], end: float, tokens: int, source: str = "usage", index: int = 0
) -> RequestRecord:
    return RequestRecord(
        index=index,
        scheduled_at=sent - 0.002,
        sent_at=sent,
        end_at=end,
        chunk_times=chunks,
        output_tokens=tokens,
        output_tokens_source=source,
        prompt_tokens=100,
        prompt_tokens_source="usage",
    )


def failed(kind: str, index: int) -> RequestRecord:
    return RequestRecord(index=index, scheduled_at=0.0, sent_at=0.0, end_at=0.1, error=kind)


def test_per_request_formulas() -> None:
    r = record(10.0, [10.3, 10.32, 10.35, 10.36], 10.4, tokens=4)
    assert ttft_ms(r) == pytest.approx(300.0)
    assert itl_ms(r) == pytest.approx([20.0, 30.0, 10.0])
    assert e2e_ms(r) == pytest.approx(400.0)
    assert tpot_ms(r) == pytest.approx((400.0 - 300.0) / 3)
    assert guidellm_itl_ms(r) == pytest.approx(60.0 / 3)
    assert guidellm_tpot_ms(r) == pytest.approx(360.0 / 4)
    row = request_row(r, t0=9.0)
    assert row["queue_wait_ms"] == pytest.approx(2.0)
    assert row["sent_s"] == pytest.approx(1.0)
    assert row["output_tokens_per_s"] == pytest.approx(4 / 0.4)
    assert row["tokens_per_chunk"] == pytest.approx(1.0)


def test_one_token_output_has_no_tpot_but_meets_tpot_slo() -> None:
    r = record(0.0, [0.1], 0.1, tokens=1)
    assert tpot_ms(r) is None and guidellm_itl_ms(r) is None
    assert meets_slo(r, Slo(ttft_ms=200.0, tpot_ms=1.0))
    assert not meets_slo(r, Slo(ttft_ms=50.0))


def test_describe_matches_numpy() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    d = describe(values)
    assert d["mean"] == pytest.approx(4.0)
    assert d["std"] == pytest.approx(float(np.std(values)))
    assert d["p90"] == pytest.approx(float(np.percentile(values, 90)))
    assert (d["p50"], d["min"], d["max"], d["count"]) == (3.0, 1.0, 10.0, 5)
    assert describe([])["p99"] is None and describe([])["count"] == 0


def test_level_summary_throughput_errors_goodput_and_exports() -> None:
    records = [
        record(0.0, [0.3, 0.32, 0.34, 0.36], 0.4, tokens=4, index=0),
        record(0.5, [0.9, 0.95, 1.0, 1.05, 1.1, 1.15], 1.2, tokens=6, source="chunks", index=1),
        failed("http_503", 2),
        failed("timeout", 3),
    ]
    s = summarise(records, duration_s=2.0, slo=Slo(ttft_ms=350.0))
    assert (s["completed"], s["failed"], s["error_rate"]) == (2, 2, 0.5)
    assert s["errors"] == {"http_503": 1, "timeout": 1}
    assert s["requests_per_s"] == pytest.approx(1.0)
    assert s["output_tokens_per_s"] == pytest.approx(5.0)
    assert s["total_tokens_per_s"] == pytest.approx((10 + 200) / 2.0)
    assert s["output_tokens_source"] == "mixed"
    assert s["ttft_ms"]["p50"] == pytest.approx(350.0)
    assert s["itl_ms"]["count"] == 3 + 5
    assert s["queue_wait_ms"]["count"] == 4
    assert s["goodput"] == {"slo": {"ttft_ms": 350.0}, "good": 1, "fraction": 0.25, "requests_per_s": 0.5}
    vllm = s["vllm"]
    assert vllm["median_ttft_ms"] == s["ttft_ms"]["p50"]
    assert vllm["p99_e2el_ms"] == s["e2e_ms"]["p99"]
    assert vllm["request_goodput"] == 0.5
    assert (vllm["completed"], vllm["total_output_tokens"]) == (2, 10)
    guide = s["guidellm"]
    assert guide["inter_token_latency_ms"]["median"] == pytest.approx(np.median([20.0, 50.0]))
    assert guide["time_per_output_token_ms"]["mean"] == pytest.approx(np.mean([90.0, 650.0 / 6]))
    assert guide["request_latency"]["max"] == pytest.approx(0.7)


def test_summary_of_nothing_is_empty_not_an_error() -> None:
    s = summarise([], duration_s=0.0, slo=None)
    assert s["completed"] == 0 and s["error_rate"] == 0.0 and s["goodput"] is None
    assert s["ttft_ms"]["mean"] is None and s["requests_per_s"] == 0.0
