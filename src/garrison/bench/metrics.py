"""Metric definitions: vLLM `bench serve` names and formulas first, GuideLLM's under their own names."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from garrison.bench.client import RequestRecord
from garrison.bench.config import Slo

PERCENTILES = (50, 90, 95, 99)


def describe(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """mean, std (population, as vLLM), p50/p90/p95/p99 (linear, as numpy), min, max and count; skips None."""
    data = np.asarray([v for v in values if v is not None], dtype=float)
    if data.size == 0:
        empty: dict[str, float | int | None] = {"mean": None, "std": None}
        empty.update({f"p{p}": None for p in PERCENTILES})
        return {**empty, "min": None, "max": None, "count": 0}
    out: dict[str, float | int | None] = {"mean": float(data.mean()), "std": float(data.std())}
    for p, value in zip(PERCENTILES, np.percentile(data, PERCENTILES), strict=True):
        out[f"p{p}"] = float(value)
    return {**out, "min": float(data.min()), "max": float(data.max()), "count": int(data.size)}


def _ms(seconds: float) -> float:
    return seconds * 1000.0


def ttft_ms(record: RequestRecord) -> float | None:
    """Request sent -> first streamed chunk carrying content."""
    return _ms(record.chunk_times[0] - record.sent_at) if record.chunk_times else None


def itl_ms(record: RequestRecord) -> list[float]:
    """Every gap between successive content chunks after the first (vLLM's ITL)."""
    times = record.chunk_times
    return [_ms(b - a) for a, b in zip(times, times[1:], strict=False)]


def e2e_ms(record: RequestRecord) -> float:
    """Request sent -> end of the response stream."""
    return _ms(record.end_at - record.sent_at)


def tpot_ms(record: RequestRecord) -> float | None:
    """(E2E - TTFT) / (output tokens - 1), vLLM's TPOT; GuideLLM calls nearly this 'ITL'."""
    first = ttft_ms(record)
    if first is None or record.output_tokens <= 1:
        return None
    return (e2e_ms(record) - first) / (record.output_tokens - 1)


def guidellm_itl_ms(record: RequestRecord) -> float | None:
    """GuideLLM's inter_token_latency_ms: (last token - first token) / (output tokens - 1)."""
    if not record.chunk_times or record.output_tokens <= 1:
        return None
    return _ms(record.chunk_times[-1] - record.chunk_times[0]) / (record.output_tokens - 1)


def guidellm_tpot_ms(record: RequestRecord) -> float | None:
    """GuideLLM's time_per_output_token_ms: (last token - request start) / output tokens, TTFT included."""
    if not record.chunk_times or record.output_tokens <= 0:
        return None
    return _ms(record.chunk_times[-1] - record.sent_at) / record.output_tokens


def request_row(record: RequestRecord, t0: float) -> dict[str, Any]:
    """Every per-request figure, flat (plus the `itl_ms` list), with times relative to the run start `t0`."""
    gaps = itl_ms(record)
    e2e = e2e_ms(record)
    chunks = len(record.chunk_times)
    return {
        "index": record.index,
        "ok": record.ok,
        "error": record.error,
        "http_status": record.http_status,
        "scheduled_s": record.scheduled_at - t0,
        "sent_s": record.sent_at - t0,
        "queue_wait_ms": _ms(record.sent_at - record.scheduled_at),
        "ttft_ms": ttft_ms(record),
        "tpot_ms": tpot_ms(record),
        "e2e_ms": e2e,
        "itl_mean_ms": float(np.mean(gaps)) if gaps else None,
        "itl_max_ms": max(gaps) if gaps else None,
        "output_tokens": record.output_tokens,
        "output_tokens_source": record.output_tokens_source,
        "input_tokens": record.prompt_tokens,
        "input_tokens_source": record.prompt_tokens_source,
        "chunks": chunks,
        "tokens_per_chunk": record.output_tokens / chunks if chunks else None,
        "output_tokens_per_s": record.output_tokens / (e2e / 1000.0) if record.ok and e2e > 0 else None,
        "guidellm_itl_ms": guidellm_itl_ms(record),
        "guidellm_tpot_ms": guidellm_tpot_ms(record),
        "error_detail": record.error_detail,
        "itl_ms": [round(gap, 4) for gap in gaps],
    }


def meets_slo(record: RequestRecord, slo: Slo) -> bool:
    """True when a completed request meets every objective (one-token outputs count TPOT 0, as vLLM)."""
    if not record.ok:
        return False
    checks = (
        (slo.ttft_ms, ttft_ms(record)),
        (slo.tpot_ms, tpot_ms(record) or 0.0),
        (slo.e2e_ms, e2e_ms(record)),
    )
    return all(limit is None or (value is not None and value <= limit) for limit, value in checks)


def _source(values: Sequence[str]) -> str | None:
    kinds = set(values)
    if not kinds:
        return None
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def summarise(
    records: Sequence[RequestRecord], duration_s: float, slo: Slo | None, client: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A level's summary: the contract keys, extra distributions, and `vllm` / `guidellm` named exports."""
    done = [r for r in records if r.ok]
    failed = len(records) - len(done)
    out_total = sum(r.output_tokens for r in done)
    in_total = sum(r.prompt_tokens for r in done)
    dists = {
        "ttft_ms": describe(ttft_ms(r) for r in done),
        "itl_ms": describe(gap for r in done for gap in itl_ms(r)),
        "tpot_ms": describe(tpot_ms(r) for r in done),
        "e2e_ms": describe(e2e_ms(r) for r in done),
    }
    good = sum(meets_slo(r, slo) for r in records) if slo else None
    summary: dict[str, Any] = {
        "completed": len(done),
        "failed": failed,
        "error_rate": failed / len(records) if records else 0.0,
        "errors": dict(Counter(r.error for r in records if r.error)),
        "duration_s": duration_s,
        "requests_per_s": _rate(len(done), duration_s),
        "output_tokens_per_s": _rate(out_total, duration_s),
        "total_tokens_per_s": _rate(out_total + in_total, duration_s),
        "input_tokens_total": in_total,
        "output_tokens_total": out_total,
        "output_tokens_source": _source([r.output_tokens_source for r in done]),
        "input_tokens_source": _source([r.prompt_tokens_source for r in done]),
        **dists,
        "queue_wait_ms": describe(_ms(r.sent_at - r.scheduled_at) for r in records),
        "request_output_tokens_per_s": describe(
            r.output_tokens / (r.end_at - r.sent_at) for r in done if r.end_at > r.sent_at
        ),
        "tokens_per_chunk": describe(r.output_tokens / len(r.chunk_times) for r in done),
        "output_tokens": describe(r.output_tokens for r in done),
        "input_tokens": describe(r.prompt_tokens for r in done),
        "goodput": None,
        "client": client or {},
    }
    if slo is not None and good is not None:
        summary["goodput"] = {
            "slo": slo.as_dict(),
            "good": good,
            "fraction": good / len(records) if records else 0.0,
            "requests_per_s": _rate(good, duration_s),
        }
    summary["vllm"] = _vllm(summary, dists)
    summary["guidellm"] = _guidellm(summary, done)
    return summary


def _vllm(summary: dict[str, Any], dists: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The level under vLLM bench serve's result keys (its E2E is 'e2el')."""
    out: dict[str, Any] = {
        "completed": summary["completed"],
        "failed": summary["failed"],
        "total_input_tokens": summary["input_tokens_total"],
        "total_output_tokens": summary["output_tokens_total"],
        "request_throughput": summary["requests_per_s"],
        "output_throughput": summary["output_tokens_per_s"],
        "total_token_throughput": summary["total_tokens_per_s"],
    }
    if summary["goodput"] is not None:
        out["request_goodput"] = summary["goodput"]["requests_per_s"]
    for ours, theirs in (("ttft_ms", "ttft"), ("tpot_ms", "tpot"), ("itl_ms", "itl"), ("e2e_ms", "e2el")):
        dist = dists[ours]
        out[f"mean_{theirs}_ms"] = dist["mean"]
        out[f"median_{theirs}_ms"] = dist["p50"]
        out[f"std_{theirs}_ms"] = dist["std"]
        for p in PERCENTILES[1:]:
            out[f"p{p}_{theirs}_ms"] = dist[f"p{p}"]
    return out


def _guidellm_dist(values: Iterable[float | None], scale: float = 1.0) -> dict[str, Any]:
    d = describe(v * scale for v in values if v is not None)
    return {
        "mean": d["mean"],
        "median": d["p50"],
        "std_dev": d["std"],
        "min": d["min"],
        "max": d["max"],
        "count": d["count"],
        "percentiles": {f"p{p}": d[f"p{p}"] for p in PERCENTILES},
    }


def _guidellm(summary: dict[str, Any], done: Sequence[RequestRecord]) -> dict[str, Any]:
    """The level under GuideLLM's names: its ITL is vLLM's TPOT, its TPOT includes TTFT, latency in s."""
    return {
        "requests_per_second": summary["requests_per_s"],
        "output_tokens_per_second": summary["output_tokens_per_s"],
        "tokens_per_second": summary["total_tokens_per_s"],
        "time_to_first_token_ms": _guidellm_dist(ttft_ms(r) for r in done),
        "inter_token_latency_ms": _guidellm_dist(guidellm_itl_ms(r) for r in done),
        "time_per_output_token_ms": _guidellm_dist(guidellm_tpot_ms(r) for r in done),
        "request_latency": _guidellm_dist((e2e_ms(r) for r in done), scale=0.001),
    }
