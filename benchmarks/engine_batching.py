"""Continuous batching in the embedded engine: garrison vs llama-cpp-python's own server vs direct in-process.

One run, one machine, one model (the embedded SmolLM2-135M Q4_1), one thread count for everything:
  direct            llama-cpp-python `Llama.generate` in a child process: the per-stream ceiling
  garrison          `garrison serve --no-auth --threads T` at each concurrency (closed loop, streaming)
  llama_cpp.server  `python -m llama_cpp.server --n_threads T --n_threads_batch T --interrupt_requests False`
  llama-server      llama.cpp's own server (`--parallel 8`), built once by this script from the llama.cpp
                    vendored in the installed llama-cpp-python's sdist (cached under ~/.cache/garrison-bench)
  engine profile    garrison's engine in a child process without HTTP, with its decode-thread time split
  prefix reuse      time to first token of a request sharing a ~1,000-token prefix with the one before
The servers alternate for `--rounds` rounds (each round runs every concurrency, c=1 and c=8 back to
back); a level's throughput is the median over rounds, its TTFT/ITL percentiles pool every request.
Every request streams /v1/completions with a distinct prompt of exactly PROMPT_TOKENS tokens (distinct
from the first token, so no server can reuse a prefix) and asks for OUTPUT_TOKENS greedy tokens. Both
servers get the same bodies: these prose prompts never reach EOS within OUTPUT_TOKENS greedy tokens
(each level reports its tokens per request to show it), so no EOS control (garrison's native
`ignore_eos`, or llama_cpp.server's Python `min_tokens` processor, which would cost it time) is needed.
Results go to benchmarks/results/engine_batching.json and a table into docs/engine.md.

    python benchmarks/engine_batching.py [--threads 2] [--levels 1,2,4,8,16] [--rounds 2]
                                         [--requests-per-worker 2] [--garrison-default-threads]
                                         [--garrison-env NAME=VALUE] [--results PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "engine_batching.json"
DOC = ROOT / "docs" / "engine.md"
TABLE_START, TABLE_END = "<!-- engine-batching:start -->", "<!-- engine-batching:end -->"
MODEL = "smollm2-135m-instruct"
PROMPT_TOKENS = 128
OUTPUT_TOKENS = 128
CONTEXT = 2048
PREFIX_TOKENS = 1000
BANDWIDTH_GBS = 22.0  # measured memory bandwidth of this machine (issue 4)


# -- prompts -----------------------------------------------------------------------------------------

class Prompts:
    """Distinct prompts of an exact token count, cut from the benchmark corpus with the model's tokenizer."""

    def __init__(self, model_path: Path) -> None:
        from llama_cpp import Llama

        from garrison.bench.corpus import SENTENCES

        self._llm = Llama(model_path=str(model_path), vocab_only=True, verbose=False)
        self._sentences = list(SENTENCES)
        self._next = 0

    def tokens(self, text: str) -> list[int]:
        return self._llm.tokenize(text.encode(), add_bos=False, special=False)

    def text(self, n_tokens: int, lead: str = "") -> str:
        """A fresh prompt of exactly `n_tokens` tokens (a server adds BOS only if the model asks for it)."""
        k, self._next = self._next, self._next + 1
        shift = k % len(self._sentences)
        body = " ".join(self._sentences[shift:] + self._sentences[:shift])
        while len(self.tokens(body)) < n_tokens + 8:
            body += " " + body
        text = f"{lead}{k}. {body}"
        for _ in range(4):  # re-tokenizing a cut can merge differently at the edge: settle it
            text = self._llm.detokenize(self.tokens(text)[:n_tokens]).decode("utf-8", "ignore")
            if len(self.tokens(text)) == n_tokens:
                return text
        raise RuntimeError(f"could not cut a prompt of exactly {n_tokens} tokens")


# -- load client ---------------------------------------------------------------------------------------

async def stream_completion(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    """Send one streaming completion; times of every content chunk, relative to sending."""
    sent = time.perf_counter()
    chunks: list[float] = []
    usage: dict[str, Any] = {}
    async with session.post(f"{url}/v1/completions", json=body) as response:
        if response.status != 200:
            return {"error": f"http {response.status}: {(await response.text())[:200]}", "chunks": []}
        async for raw in response.content:
            line = raw.strip()
            if not line.startswith(b"data:") or line == b"data: [DONE]":
                continue
            now = time.perf_counter()
            event = json.loads(line[5:])
            if "error" in event:
                return {"error": str(event["error"])[:200], "chunks": chunks}
            if event.get("choices") and event["choices"][0].get("text"):
                chunks.append(now - sent)
            usage = event.get("usage") or usage
    return {"chunks": chunks, "usage": usage, "end": time.perf_counter() - sent}


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def run_level(url: str, bodies: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    """Closed loop: `concurrency` workers each send their next request as soon as the last one ends."""
    queue = list(reversed(bodies))
    records: list[dict[str, Any]] = []
    timeout = aiohttp.ClientTimeout(total=900)
    # one connection per request: llama-server closes idle kept-alive connections, and a request written to
    # one it had closed fails; a fresh loopback connection costs every server the same ~0.1 ms
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def worker() -> None:
            while queue:
                records.append(await stream_completion(session, url, queue.pop()))

        started = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        wall = time.perf_counter() - started
    ok = [r for r in records if "error" not in r]
    return {
        "requests": len(records),
        "errors": [r["error"] for r in records if "error" in r][:3],
        "tokens": sum(len(r["chunks"]) for r in ok),
        "ok": len(ok),
        "wall_s": wall,
        "ttft": [r["chunks"][0] * 1000 for r in ok if r["chunks"]],
        "itl": [(b - a) * 1000 for r in ok for a, b in zip(r["chunks"], r["chunks"][1:], strict=False)],
        "load_avg": os.getloadavg()[0],
    }


def summarize(concurrency: int, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One level over all rounds: median of the rounds' throughputs, percentiles over every request."""
    per_round = [r["tokens"] / r["wall_s"] for r in rounds]
    ttft = [t for r in rounds for t in r["ttft"]]
    itl = [t for r in rounds for t in r["itl"]]
    ok = sum(r["ok"] for r in rounds)
    return {
        "concurrency": concurrency,
        "requests": sum(r["requests"] for r in rounds),
        "errors": [e for r in rounds for e in r["errors"]][:3],
        "output_tokens_per_request": round(sum(r["tokens"] for r in rounds) / max(1, ok), 1),
        "throughput_tok_s": round(statistics.median(per_round), 1),
        "throughput_per_round": [round(x, 1) for x in per_round],
        "ttft_ms": {"p50": round(_pct(ttft, 50), 1), "p99": round(_pct(ttft, 99), 1)},
        "itl_ms": {"p50": round(_pct(itl, 50), 2), "p99": round(_pct(itl, 99), 2)},
        "load_avg_per_round": [round(r["load_avg"], 2) for r in rounds],
    }


def level_bodies(prompts: Prompts, n: int) -> list[dict[str, Any]]:
    return [{"model": MODEL, "prompt": prompts.text(PROMPT_TOKENS), "max_tokens": OUTPUT_TOKENS,
             "temperature": 0.0, "stream": True} for _ in range(n)]


async def prefix_reuse(url: str, prompts: Prompts, repeats: int = 3) -> dict[str, Any]:
    """TTFT of a request after another that shares a ~PREFIX_TOKENS prefix, against the first's TTFT."""
    ratios, cold, warm = [], [], []
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600), connector=connector) as session:
        for _ in range(repeats):
            prefix = prompts.text(PREFIX_TOKENS, lead=f"Reference {uuid.uuid4().hex[:8]}: ")
            timings = []
            for question in ("\nQuestion: what is the first sentence about?",
                             "\nQuestion: what is the last sentence about?"):
                body = {"model": MODEL, "prompt": prefix + question, "max_tokens": 8, "temperature": 0.0,
                        "stream": True, "stream_options": {"include_usage": True}}
                record = await stream_completion(session, url, body)
                timings.append(record["chunks"][0] * 1000)
            cold.append(timings[0])
            warm.append(timings[1])
            ratios.append(timings[0] / timings[1])
    return {"prefix_tokens": PREFIX_TOKENS, "ttft_first_ms": [round(t, 1) for t in cold],
            "ttft_second_ms": [round(t, 1) for t in warm],
            "speedup_median": round(statistics.median(ratios), 2)}


# -- llama-server, built from the llama.cpp vendored in the installed llama-cpp-python's sdist ---------------

CACHE = Path(os.environ.get("GARRISON_BENCH_CACHE", Path.home() / ".cache" / "garrison-bench"))


def ensure_llama_server(version: str) -> Path:
    """llama.cpp's own `llama-server`, built once (niced, 2 jobs) from the same source as the engine; cached.

    The sdist comes from the package index with pip (the benchmark's setup, never garrison at run time);
    the build uses the wheel's options (native, OpenMP), so both servers run the same kernels.
    """
    root = CACHE / f"llama-cpp-python-{version}"
    binary = root / "build" / "bin" / "llama-server"
    if binary.exists():
        return binary
    root.mkdir(parents=True, exist_ok=True)
    source = root / f"llama_cpp_python-{version}"
    if not source.exists():
        archive = root / f"llama_cpp_python-{version}.tar.gz"
        if not archive.exists():
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                            f"llama-cpp-python=={version}", "-d", str(root)], check=True)
        subprocess.run(["tar", "xzf", str(archive), "-C", str(root)], check=True)
    build = root / "build"
    configure = ["cmake", "-S", str(source / "vendor" / "llama.cpp"), "-B", str(build), "-G", "Ninja",
                 "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DLLAMA_BUILD_SERVER=ON",
                 "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_CURL=OFF",
                 "-DLLAMA_OPENSSL=OFF", "-DBUILD_SHARED_LIBS=OFF"]
    subprocess.run(["nice", "-n", "19", *configure], check=True)
    subprocess.run(["nice", "-n", "19", "cmake", "--build", str(build), "-j", "2", "--target", "llama-server"],
                   check=True)
    return binary


# -- servers -------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server(command: list[str], ready_path: str, port: int, log: Path,
           env: dict[str, str] | None = None) -> Iterator[str]:
    """Run a server subprocess (with `env` added) until its `ready_path` answers 200; stop it (only it) afterwards."""
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, **env} if env else None)
        try:
            deadline = time.monotonic() + 180
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{command[:3]} exited with {proc.returncode}; see {log}")
                try:
                    if httpx.get(url + ready_path, timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{command[:3]} did not become ready; see {log}")
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def serve_round(url: str, prompts: Prompts, levels: list[int], per_worker: int, name: str,
                samples: dict[int, list[dict[str, Any]]]) -> None:
    """One round over every level against a running server, after a short warm-up."""
    asyncio.run(run_level(url, level_bodies(prompts, 2), 2))  # page the model in, allocate buffers
    for c in levels:
        result = asyncio.run(run_level(url, level_bodies(prompts, max(4, per_worker * c)), c))
        samples.setdefault(c, []).append(result)
        print(f"  {name} c={c}: {result['tokens'] / result['wall_s']:.1f} tok/s, "
              f"TTFT p50 {_pct(result['ttft'], 50):.0f} ms, ITL p50 {_pct(result['itl'], 50):.1f} ms, "
              f"load {result['load_avg']:.2f}", flush=True)


# -- child processes: direct llama-cpp-python and garrison's engine without HTTP --------------------------

def no_extra_buffers() -> None:
    """Make llama-cpp-python load models without extra weight buffers (its `Llama` has no such option).

    On an AMX CPU llama.cpp's AMX buffer segfaults at the first decode (issue 12); the embedded Q4_1 model is
    repacked by AMX only, so without extra buffers it runs the kernels garrison's `auto` path runs.
    """
    import llama_cpp.llama_cpp as low

    default = low.llama_model_default_params

    def params() -> Any:
        p = default()
        p.use_extra_bufts = False
        return p

    low.llama_model_default_params = params


def child_direct(threads: int, runs: int = 3) -> dict[str, Any]:
    """Single-stream generation with llama-cpp-python's high-level API, greedy, OUTPUT_TOKENS tokens."""
    from llama_cpp import Llama

    no_extra_buffers()

    from garrison.registry import embedded_model_path

    llm = Llama(model_path=str(embedded_model_path()), n_ctx=CONTEXT, n_batch=512, n_threads=threads,
                n_threads_batch=threads, verbose=False)
    prompts = Prompts(embedded_model_path())
    llm.generate(llm.tokenize(b"warm up", add_bos=True), temp=0.0).__next__()
    rows = []
    for _ in range(runs):
        tokens = llm.tokenize(prompts.text(PROMPT_TOKENS).encode(), add_bos=True)
        start = time.perf_counter()
        times = []
        for _token in llm.generate(tokens, temp=0.0, reset=True):
            times.append(time.perf_counter())
            if len(times) == OUTPUT_TOKENS:
                break
        rows.append({"ttft_ms": (times[0] - start) * 1000,
                     "decode_tok_s": (len(times) - 1) / (times[-1] - times[0]),
                     "end_to_end_tok_s": len(times) / (times[-1] - start)})
    return {key: round(statistics.median(r[key] for r in rows), 2) for key in rows[0]}


def child_engine(threads: int, levels: list[int]) -> dict[str, Any]:
    """Garrison's engine driven in-process (no HTTP) with the decode thread's time split per level."""
    from garrison.domain import GenerationRequest, SamplingParams, TokenDelta
    from garrison.engines.llama import create_engines
    from garrison.registry import build_registry
    from garrison.settings import load_settings

    settings = load_settings(engine={"threads": threads, "context_length": CONTEXT, "embeddings": False})
    models = [m for m in build_registry(settings) if m.kind == "generate"]
    engine: Any = create_engines(models, settings)[MODEL]
    prompts = Prompts(engine.info.path)

    async def one(prompt: str) -> None:
        sampling = SamplingParams(max_tokens=OUTPUT_TOKENS, temperature=0.0, ignore_eos=True)
        async for _ in engine.generate(GenerationRequest(model=MODEL, prompt=prompt, sampling=sampling)):
            pass

    async def level(c: int) -> dict[str, Any]:
        queue = [prompts.text(PROMPT_TOKENS) for _ in range(max(4, 2 * c))]
        before, started = engine.metrics(), time.perf_counter()

        async def worker() -> None:
            while queue:
                await one(queue.pop())

        await asyncio.gather(*[worker() for _ in range(c)])
        wall = time.perf_counter() - started
        d = {k: v - before[k] for k, v in engine.metrics().items() if k.endswith("_total")}
        step, decode = d["step_ns_total"] / 1e9, d["decode_ns_total"] / 1e9
        sample = d["sample_ns_total"] / 1e9
        return {
            "throughput_tok_s": round(d["tokens_generated_total"] / wall, 1),
            "decode_steps": d["decode_steps_total"],
            "ms_per_step": round(step * 1000 / d["decode_steps_total"], 2),
            "share_llama_decode": round(decode / wall, 3),
            "share_sampling": round(sample / wall, 3),
            "share_scheduler_python": round((step - decode - sample) / wall, 3),
            "share_decode_thread_idle": round(1 - step / wall, 3),
        }

    async def phase(c: int) -> tuple[float, float]:
        """Prefill and decode tokens/s of c requests started together (PROMPT in, OUTPUT out, greedy).

        All c prompts are prefilled before anyone's second token (oldest first, 63 rows each per step), so
        the run splits at the moment the last first token arrives: before it prefill, after it decode only.
        """
        sampling = SamplingParams(max_tokens=OUTPUT_TOKENS, temperature=0.0, ignore_eos=True)
        batch = [GenerationRequest(model=MODEL, prompt=prompts.text(PROMPT_TOKENS), sampling=sampling)
                 for _ in range(c)]
        firsts: list[float] = []
        started = time.perf_counter()

        async def drain(request: GenerationRequest) -> int:
            tokens = 0
            async for event in engine.generate(request):
                if isinstance(event, TokenDelta):
                    if not tokens:
                        firsts.append(time.perf_counter())
                    tokens += event.tokens
            return tokens

        generated = sum(await asyncio.gather(*[drain(request) for request in batch]))
        ended, split = time.perf_counter(), max(firsts)
        return c * PROMPT_TOKENS / (split - started), (generated - c) / (ended - split)

    async def phases() -> dict[str, Any]:
        """Prefill and decode rates measured apart, and the c8/c1 ratio they allow at PROMPT/OUTPUT tokens.

        A request at concurrency 1 takes P/prefill_1 + O/decode_1; eight at concurrency 8 take at least
        8P/prefill_8 + 8O/decode_8 of engine time, so no scheduler gets more than 8 * t1 / t8 out of them.
        """
        rates: dict[str, float] = {}
        for c in (1, 8):
            runs = [await phase(c) for _ in range(3)]
            rates[f"prefill_c{c}_tok_s"] = round(statistics.median(r[0] for r in runs), 1)
            rates[f"decode_c{c}_tok_s"] = round(statistics.median(r[1] for r in runs), 1)
        t1 = PROMPT_TOKENS / rates["prefill_c1_tok_s"] + OUTPUT_TOKENS / rates["decode_c1_tok_s"]
        t8 = 8 * PROMPT_TOKENS / rates["prefill_c8_tok_s"] + 8 * OUTPUT_TOKENS / rates["decode_c8_tok_s"]
        rates["decode_batching_gain"] = round(rates["decode_c8_tok_s"] / rates["decode_c1_tok_s"], 2)
        rates["prefill_batching_gain"] = round(rates["prefill_c8_tok_s"] / rates["prefill_c1_tok_s"], 2)
        rates["c8_vs_c1_cap"] = round(8 * t1 / t8, 2)
        return rates

    async def run() -> dict[str, Any]:
        await one(prompts.text(16))
        result: dict[str, Any] = {str(c): await level(c) for c in levels}
        result["phases"] = await phases()
        return result

    return asyncio.run(run())


def run_child(kind: str, threads: int, levels: list[int]) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", kind, "--threads", str(threads),
               "--levels", ",".join(map(str, levels)), "--output-tokens", str(OUTPUT_TOKENS),
               "--prompt-tokens", str(PROMPT_TOKENS)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- report --------------------------------------------------------------------------------------------

def targets(r: dict[str, Any]) -> dict[str, Any]:
    g, s, d = r["garrison"], r["llama_cpp_server"], r["direct"]
    single = g["1"]["throughput_tok_s"] / d["end_to_end_tok_s"]
    own = g["8"]["throughput_tok_s"] / g["1"]["throughput_tok_s"]
    versus = g["8"]["throughput_tok_s"] / s["8"]["throughput_tok_s"]
    return {
        "single_stream_vs_direct": {"value": round(single, 3), "target": ">= 0.90", "met": single >= 0.9},
        "c8_vs_own_c1": {"value": round(own, 2), "target": ">= 1.5", "met": own >= 1.5},
        "c8_vs_llama_cpp_server_c8": {"value": round(versus, 2), "target": ">= 1.5", "met": versus >= 1.5},
        "c8_ttft_p50_ms_vs_llama_cpp_server": {
            "value": [g["8"]["ttft_ms"]["p50"], s["8"]["ttft_ms"]["p50"]], "target": "garrison below",
            "met": g["8"]["ttft_ms"]["p50"] < s["8"]["ttft_ms"]["p50"]},
        "prefix_ttft_speedup": {"value": r["prefix"]["garrison"]["speedup_median"], "target": ">= 5",
                                "met": r["prefix"]["garrison"]["speedup_median"] >= 5},
        "direct_decode_vs_bandwidth_ceiling": {
            "value": round(d["decode_tok_s"] / r["bandwidth_ceiling_tok_s"], 2), "target": "report"},
        **_versus_llama_server(g, r.get("llama_server")),
    }


def _versus_llama_server(g: dict[str, Any], ls: dict[str, Any] | None) -> dict[str, Any]:
    """garrison against llama.cpp's own server: c1 ITL and TTFT (lower wins), c8 throughput (higher wins)."""
    if not ls:
        return {}
    itl = (g["1"]["itl_ms"]["p50"], ls["1"]["itl_ms"]["p50"])
    ttft = (g["1"]["ttft_ms"]["p50"], ls["1"]["ttft_ms"]["p50"])
    c8 = (g["8"]["throughput_tok_s"], ls["8"]["throughput_tok_s"])
    return {
        "c1_itl_p50_ms_vs_llama_server": {"value": list(itl), "target": "garrison <=", "met": itl[0] <= itl[1]},
        "c1_ttft_p50_ms_vs_llama_server": {"value": list(ttft), "target": "garrison <=", "met": ttft[0] <= ttft[1]},
        "c8_tok_s_vs_llama_server": {"value": list(c8), "target": "garrison >=", "met": c8[0] >= c8[1]},
    }


def markdown(r: dict[str, Any]) -> str:
    d = r["direct"]
    lines = [
        f"Measured {r['date']} on {r['machine']['cpu']} ({r['machine']['cores']} cores, shared), "
        f"{r['model']}, {r['threads']} threads everywhere, {PROMPT_TOKENS} prompt tokens in / "
        f"{OUTPUT_TOKENS} out, streaming, closed loop, {r['rounds']} rounds (servers alternating). "
        f"Load average {r['machine']['load_avg_before']} before, {r['machine']['load_avg_after']} after.",
        "",
        "| server | concurrency | aggregate tok/s (rounds) | TTFT p50 / p99 ms | ITL p50 / p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, key in (("garrison", "garrison"), ("llama-server", "llama_server"),
                      ("llama_cpp.server", "llama_cpp_server")):
        for c, row in r.get(key, {}).items():
            rounds = ", ".join(map(str, row["throughput_per_round"]))
            lines.append(f"| {name} | {c} | {row['throughput_tok_s']} ({rounds}) | {row['ttft_ms']['p50']} / "
                         f"{row['ttft_ms']['p99']} | {row['itl_ms']['p50']} / {row['itl_ms']['p99']} |")
    runs = ", ".join(str(round(run["end_to_end_tok_s"], 1)) for run in d["runs"])
    lines.append(f"| direct llama-cpp-python | 1 | {d['end_to_end_tok_s']} ({runs}); "
                 f"decode {d['decode_tok_s']} | {d['ttft_ms']} | - |")
    lines += ["", "| target | measured | goal | met |", "|---|---:|---:|:-:|"]
    for name, t in r["targets"].items():
        value = " vs ".join(map(str, t["value"])) if isinstance(t["value"], list) else t["value"]
        met = "-" if "met" not in t else "yes" if t["met"] else "no"
        lines.append(f"| {name} | {value} | {t['target']} | {met} |")
    p, q = r["prefix"]["garrison"], r["prefix"]["llama_cpp_server"]
    if "llama_server" in r["prefix"]:
        lines.append(f"| prefix reuse speedup, llama-server | {r['prefix']['llama_server']['speedup_median']} | "
                     "report | - |")
    lines += ["", f"Prefix reuse ({PREFIX_TOKENS}-token shared prefix, median of {len(p['ttft_first_ms'])}): "
              f"garrison first request TTFT {statistics.median(p['ttft_first_ms'])} ms, second "
              f"{statistics.median(p['ttft_second_ms'])} ms ({p['speedup_median']}x); "
              f"llama_cpp.server {q['speedup_median']}x (it reuses the previous prompt).",
              "", "Engine without HTTP (decode thread's wall time split):", "",
              "| concurrency | tok/s | ms/step | llama_decode | sampling | scheduler Python | idle |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for c, e in r["engine_profile"].items():
        if c == "phases":
            continue
        lines.append(f"| {c} | {e['throughput_tok_s']} | {e['ms_per_step']} | "
                     f"{e['share_llama_decode']:.0%} | {e['share_sampling']:.0%} | "
                     f"{e['share_scheduler_python']:.0%} | {e['share_decode_thread_idle']:.0%} |")
    ph = r["engine_profile"].get("phases")
    if ph:
        lines += ["", "Where the time goes: each phase alone, in the same engine (tokens/s):", "",
                  "| phase | concurrency 1 | concurrency 8 | gain from batching |", "|---|---:|---:|---:|",
                  f"| prefill ({PROMPT_TOKENS}-token prompts) | {ph['prefill_c1_tok_s']} | {ph['prefill_c8_tok_s']} "
                  f"| {ph['prefill_batching_gain']}x |",
                  f"| decode | {ph['decode_c1_tok_s']} | {ph['decode_c8_tok_s']} | {ph['decode_batching_gain']}x |",
                  "", f"At {PROMPT_TOKENS} in / {OUTPUT_TOKENS} out these rates allow at most "
                  f"{ph['c8_vs_c1_cap']}x from concurrency 1 to 8, whatever the scheduler does "
                  "(8 * t1 / t8, with t = prompt / prefill rate + output / decode rate)."]
    return "\n".join(lines)


def write_doc(table: str) -> None:
    text = DOC.read_text() if DOC.exists() else f"{TABLE_START}\n{TABLE_END}\n"
    head, _, rest = text.partition(TABLE_START)
    _, _, tail = rest.partition(TABLE_END)
    DOC.write_text(f"{head}{TABLE_START}\n{table}\n{TABLE_END}{tail}")


def main() -> None:
    global OUTPUT_TOKENS, PROMPT_TOKENS
    if sys.argv[1:2] == ["--llama-cpp-server"]:  # llama_cpp.server without extra buffers (no_extra_buffers)
        import runpy

        no_extra_buffers()
        sys.argv = ["llama_cpp.server", *sys.argv[2:]]
        runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--levels", default="1,2,4,8,16")
    parser.add_argument("--requests-per-worker", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=["direct", "engine"])
    parser.add_argument("--no-llama-server", action="store_true", help="Skip llama.cpp's own llama-server.")
    parser.add_argument("--output-tokens", type=int, default=OUTPUT_TOKENS)
    parser.add_argument("--prompt-tokens", type=int, default=PROMPT_TOKENS,
                        help="Prompt length (e.g. 640 for lone one-token steps past 512 KV cells).")
    parser.add_argument("--garrison-default-threads", action="store_true",
                        help="Serve garrison with its own thread defaults instead of --threads.")
    parser.add_argument("--garrison-env", action="append", default=[], metavar="NAME=VALUE",
                        help="A setting for garrison's server, e.g. GARRISON_ENGINE__BATCH_INVARIANT=false.")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="Where the JSON goes; docs/engine.md's table is written only for the default.")
    args = parser.parse_args()
    garrison_env = dict(item.split("=", 1) for item in args.garrison_env)
    OUTPUT_TOKENS, PROMPT_TOKENS = args.output_tokens, args.prompt_tokens
    levels = [int(x) for x in args.levels.split(",")]
    if not {1, 8} <= set(levels):
        parser.error("--levels must include 1 and 8: the targets compare them")
    # c=1 and c=8 back to back in every round, so drift on a shared machine hits both alike
    order = sorted(levels, key=lambda c: (c not in (1, 8), c))
    if args.child == "direct":
        print(json.dumps(child_direct(args.threads)))
        return
    if args.child == "engine":
        print(json.dumps(child_engine(args.threads, [1, 8])))
        return

    from llama_cpp import __version__ as llama_cpp_version

    from garrison.registry import embedded_model_path

    model_path = embedded_model_path()
    prompts = Prompts(model_path)
    size_mb = model_path.stat().st_size / 1e6
    started = time.time()
    r: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_avg_before": round(os.getloadavg()[0], 2)},
        "model": f"{model_path.name} ({size_mb:.0f} MB)", "threads": args.threads,
        "garrison_threads": "defaults" if args.garrison_default_threads else args.threads,
        "garrison_env": garrison_env,
        "llama_cpp_python": llama_cpp_version, "prompt_tokens": PROMPT_TOKENS, "output_tokens": OUTPUT_TOKENS,
        "bandwidth_ceiling_tok_s": round(BANDWIDTH_GBS * 1e3 / size_mb, 1), "rounds": args.rounds,
    }
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
        r["machine"]["cpu"] = names[0] if names else r["machine"]["cpu"]
    print("direct llama-cpp-python ...", flush=True)
    direct = [run_child("direct", args.threads, levels)]
    logs = Path(tempfile.mkdtemp(prefix="engine-batching-"))
    commands = {
        "garrison": lambda port: [
            sys.executable, "-m", "garrison", "serve", "--no-auth", "--host", "127.0.0.1",
            "--port", str(port), *([] if args.garrison_default_threads else ["--threads", str(args.threads)]),
            "--context-length", str(CONTEXT),
            "--no-embeddings", "--home", str(logs / "home")],
        "llama_cpp_server": lambda port: [
            sys.executable, __file__, "--llama-cpp-server", "--model", str(model_path), "--model_alias", MODEL,
            "--host", "127.0.0.1", "--port", str(port), "--n_threads", str(args.threads),
            "--n_threads_batch", str(args.threads), "--n_ctx", str(CONTEXT), "--interrupt_requests", "False"],
    }
    if not args.no_llama_server:
        print("llama-server (built once, cached) ...", flush=True)
        binary = ensure_llama_server(llama_cpp_version)
        commands["llama_server"] = lambda port: [
            str(binary), "--model", str(model_path), "--alias", MODEL, "--host", "127.0.0.1", "--port", str(port),
            "--threads", str(args.threads), "--threads-batch", str(args.threads), "--parallel", "8",
            "--ctx-size", str(CONTEXT * 8), "--no-webui",
            # no extra weight buffers: on an AMX CPU llama.cpp's AMX buffer segfaults at the first decode (issue
            # 12); the embedded Q4_1 model is repacked only by AMX, so this is garrison's `auto` path, same kernels
            "--no-repack"]
    ready = {"garrison": "/health", "llama_cpp_server": "/v1/models", "llama_server": "/health"}
    samples: dict[str, dict[int, list[dict[str, Any]]]] = {name: {} for name in commands}
    r["prefix"] = {}
    for round_no in range(args.rounds):
        for name, command in commands.items():
            port = free_port()
            print(f"{name}, round {round_no + 1} of {args.rounds} ...", flush=True)
            env = garrison_env if name == "garrison" else None
            with server(command(port), ready[name], port, logs / f"{name}-{round_no}.log", env) as url:
                serve_round(url, prompts, order, args.requests_per_worker, name, samples[name])
                if round_no == 0:
                    r["prefix"][name] = asyncio.run(prefix_reuse(url, prompts))
    for name in commands:
        r[name] = {str(c): summarize(c, samples[name][c]) for c in levels}
    direct.append(run_child("direct", args.threads, levels))
    r["direct"] = {key: round(statistics.mean(d[key] for d in direct), 2) for key in direct[0]}
    r["direct"]["runs"] = direct
    print("garrison engine profile ...", flush=True)
    r["engine_profile"] = run_child("engine", args.threads, levels)
    r["machine"]["load_avg_after"] = round(os.getloadavg()[0], 2)
    r["duration_s"] = round(time.time() - started, 1)
    r["targets"] = targets(r)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(r, indent=2) + "\n")
    if args.results == RESULTS:
        write_doc(markdown(r))
    print(markdown(r))


if __name__ == "__main__":
    main()
