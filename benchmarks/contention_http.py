"""The thread governor end to end: `garrison serve` streaming at concurrency 1, quiet and beside a busy neighbour.

One server with its defaults (engine.adaptive_threads), the embedded model, 128 prompt tokens in / 128 out per
request (engine_batching.py's prompts and client). Rounds alternate quiet and busy (one `while True` process
started and stopped by this script around the busy segment); after each segment the server's own
`garrison_engine_threads` gauge and `garrison_engine_thread_switches_total` counter are read. Reported:
medians over rounds of throughput, inter-token latency and the decode rate it implies, and busy/quiet
ratios of the same run (issue 12 item 2 asks for at least half of the quiet rate).

    python benchmarks/contention_http.py [--rounds 3] [--requests 4]

Results: benchmarks/results/contention_http.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import engine_batching as eb  # noqa: E402 - the sibling benchmark's prompts, client and server helpers

RESULTS = ROOT / "benchmarks" / "results" / "contention_http.json"


def engine_threads(url: str) -> dict[str, float]:
    """The server's thread gauge and switch counter, from its /metrics."""
    found = {}
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        for name in ("garrison_engine_threads", "garrison_engine_thread_switches_total"):
            if line.startswith(name + "{"):
                found[name] = float(line.rsplit(" ", 1)[1])
    return found


def segment(url: str, prompts: eb.Prompts, requests: int, busy: bool) -> dict[str, Any]:
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        result = asyncio.run(eb.run_level(url, eb.level_bodies(prompts, requests), 1))
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    itl = eb._pct(result["itl"], 50)
    return {"tok_s": round(result["tokens"] / result["wall_s"], 1), "itl_p50_ms": round(itl, 2),
            "decode_tok_s": round(1000 / itl, 1), "ttft_p50_ms": round(eb._pct(result["ttft"], 50), 1),
            "errors": result["errors"], **engine_threads(url)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=4)
    args = parser.parse_args()
    from garrison.registry import embedded_model_path

    prompts = eb.Prompts(embedded_model_path())
    logs = Path(tempfile.mkdtemp(prefix="contention-http-"))
    port = eb.free_port()
    command = [sys.executable, "-m", "garrison", "serve", "--no-auth", "--host", "127.0.0.1", "--port", str(port),
               "--context-length", str(eb.CONTEXT), "--no-embeddings", "--home", str(logs / "home")]
    started, load_before = time.time(), os.getloadavg()[0]
    runs: dict[str, list[dict[str, Any]]] = {"quiet": [], "busy": []}
    with eb.server(command, "/health", port, logs / "server.log") as url:
        asyncio.run(eb.run_level(url, eb.level_bodies(prompts, 2), 1))  # warm up
        for round_no in range(args.rounds):
            for name in ("quiet", "busy"):
                runs[name].append(segment(url, prompts, args.requests, name == "busy"))
                print(f"round {round_no + 1} {name}: {runs[name][-1]}", flush=True)
    medians = {name: {key: statistics.median(r[key] for r in rows)
                      for key in ("tok_s", "itl_p50_ms", "decode_tok_s", "ttft_p50_ms")}
               for name, rows in runs.items()}
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
        "machine": {"cpu": eb.platform.processor() or eb.platform.machine(), "cores": os.cpu_count(),
                    "load_avg_before": round(load_before, 2), "load_avg_after": round(os.getloadavg()[0], 2)},
        "server": "garrison serve, defaults (engine.adaptive_threads), concurrency 1, streaming",
        "prompt_tokens": eb.PROMPT_TOKENS, "output_tokens": eb.OUTPUT_TOKENS, "rounds": args.rounds,
        "requests_per_segment": args.requests, "medians": medians,
        "busy_vs_quiet": {key: round(medians["busy"][key] / medians["quiet"][key], 2)
                          for key in ("tok_s", "decode_tok_s")},
        "runs": runs,
    }
    with open("/proc/cpuinfo") as info:
        names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    result["machine"]["cpu"] = names[0] if names else result["machine"]["cpu"]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"medians": medians, "busy_vs_quiet": result["busy_vs_quiet"]}, indent=2))


if __name__ == "__main__":
    main()
