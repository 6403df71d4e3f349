"""Outputs: the results.json contract, requests.csv, PNG plots, Ctrl-C partial results, and compare."""

from __future__ import annotations

import asyncio
import copy
import csv
import json
from pathlib import Path
from typing import Any

import pytest

from garrison.bench.compare import compare, load_results, unmatched
from garrison.bench.config import BenchConfig
from garrison.bench.load import SweepState
from garrison.bench.report import build_results, level_table, sweep_table, write_outputs
from garrison.bench.run import measure
from garrison.errors import InvalidRequest

FAST = "ttft=5,itl=1,tokens=4"


@pytest.fixture(scope="module")
def sweep(scripted_server: str) -> dict[str, Any]:
    """A two-level sweep measured against the scripted server."""
    config = BenchConfig(
        url=scripted_server, model=FAST, api_key="sk-do-not-write", concurrency=(1, 2), requests=4, warmup=1
    )
    return asyncio.run(measure(config))


def test_results_json_contract(sweep: dict[str, Any], tmp_path: Path) -> None:
    files = write_outputs(sweep, tmp_path)
    assert {p.name for p in files} == {
        "results.json",
        "requests.csv",
        "latency.png",
        "throughput.png",
        "ttft_cdf.png",
    }
    text = (tmp_path / "results.json").read_text(encoding="utf-8")
    assert "sk-do-not-write" not in text
    doc = json.loads(text)
    assert {"settings", "environment", "levels"} <= doc.keys()
    assert [level["concurrency"] for level in doc["levels"]] == [1, 2]
    for level in doc["levels"]:
        summary = level["summary"]
        for metric in ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms"):
            assert {"mean", "p50", "p90", "p95", "p99"} <= summary[metric].keys()
            assert isinstance(summary[metric]["p50"], float)
        assert summary["completed"] == 4 and summary["error_rate"] == 0.0
        assert summary["output_tokens_per_s"] > 0 and summary["requests_per_s"] > 0
        assert len(level["requests"]) == 4
        assert all(len(r["itl_ms"]) == 3 for r in level["requests"])


def test_csv_has_a_row_per_request_and_plots_are_png(sweep: dict[str, Any], tmp_path: Path) -> None:
    write_outputs(sweep, tmp_path)
    with (tmp_path / "requests.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8
    assert {"ttft_ms", "tpot_ms", "queue_wait_ms", "guidellm_tpot_ms"} <= rows[0].keys()
    assert [r["concurrency"] for r in rows] == ["1"] * 4 + ["2"] * 4
    for name in ("latency.png", "throughput.png", "ttft_cdf.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tables_render(sweep: dict[str, Any]) -> None:
    assert level_table(sweep["levels"][0]).row_count == 5
    assert sweep_table(sweep).row_count == 2


def test_interrupted_run_keeps_completed_requests(scripted_server: str, tmp_path: Path) -> None:
    config = BenchConfig(url=scripted_server, model="ttft=20,itl=2,tokens=4", requests=1000, warmup=0)
    state = SweepState(config)

    async def interrupt_after_three() -> None:
        task = asyncio.create_task(measure(config, state=state))
        while not state.levels or len(state.levels[0].records) < 3:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(interrupt_after_three())
    results = build_results(state)
    write_outputs(results, tmp_path)
    doc = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    level = doc["levels"][0]
    assert doc["interrupted"] is True and level["interrupted"] is True
    assert 3 <= level["summary"]["completed"] < 1000
    assert level["summary"]["failed"] == 0
    assert level["abandoned_in_flight"] == 1


def test_compare_matches_levels_and_gives_ratios(sweep: dict[str, Any]) -> None:
    slower = copy.deepcopy(sweep)
    slower["levels"][0]["summary"]["ttft_ms"]["p50"] *= 2
    del slower["levels"][1]
    rows = compare(sweep, slower)
    assert {row.level for row in rows} == {"concurrency 1"}
    ttft = next(row for row in rows if row.metric == "TTFT p50 ms")
    assert ttft.ratio == pytest.approx(2.0)
    errors = next(row for row in rows if row.metric == "error rate")
    assert errors.ratio is None
    assert unmatched(sweep, slower) == ["concurrency 2 (only in A)"]


def test_load_results_checks_the_file(tmp_path: Path) -> None:
    (tmp_path / "other.json").write_text('{"benchmarks": []}', encoding="utf-8")
    with pytest.raises(InvalidRequest, match="levels"):
        load_results(tmp_path / "other.json")
    with pytest.raises(InvalidRequest, match="no such"):
        load_results(tmp_path / "missing.json")
