"""CPU paths of the embedded engine: extra weight buffers, thread counts and wait policies, quiet and contended.

Every case is a real test decode in a fresh child process (`python -m garrison.engines.probe`: load, 64-token
prefill, 64 greedy tokens), so environment variables read at library load (OpenMP's wait policy) apply.
Contended cases run beside one CPU-bound process (`python -c 'while True: pass'`) started and stopped by
this script. Each case runs `--repeats` times, interleaved with the others; the median counts, and every
ratio is against the quiet default (2 threads, llama.cpp's defaults) measured in the same run.

Also measured: what a supervised worker process would cost per decode step (a pipe round trip between
two processes) against the start-up probe's one-off seconds.

    python benchmarks/cpu_paths.py [--repeats 3] [--threads 2]

Results: benchmarks/results/cpu_paths.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "cpu_paths.json"
DOC = ROOT / "docs" / "engine.md"
START, END = "<!-- cpu-paths:start -->", "<!-- cpu-paths:end -->"
CACHE = Path(os.environ.get("GARRISON_BENCH_CACHE", Path.home() / ".cache" / "garrison-bench"))
TOKENS = 64


@contextlib.contextmanager
def busy(on: bool) -> Iterator[None]:
    """One competing CPU-bound process for the duration (none when `on` is False)."""
    if not on:
        yield
        return
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)  # let it reach the run queue
        yield
    finally:
        hog.terminate()
        hog.wait()


# libgomp's own default when OMP_WAIT_POLICY is unset: spin this long, then sleep (what garrison and
# llama.cpp run with; spelled out so the table says it).
SPIN_DEFAULT = {"GOMP_SPINCOUNT": "300000"}


def probe(model: Path, mode: str, threads: int, env: dict[str, str], contended: bool,
          adaptive: bool = False) -> dict[str, Any]:
    command = [sys.executable, "-m", "garrison.engines.probe", str(model), "--extra-buffers", mode,
               "--threads", str(threads), "--tokens", str(TOKENS), *(["--adaptive"] if adaptive else [])]
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    with busy(contended):
        done = subprocess.run(command, capture_output=True, text=True, env={**base, **env}, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def llama_quantize() -> Path | None:
    """llama.cpp's `llama-quantize`, built once beside engine_batching.py's llama-server (same source, cached)."""
    found = next(CACHE.glob("llama-cpp-python-*/build/bin/llama-quantize"), None)
    if found is not None:
        return found
    try:
        from llama_cpp import __version__ as version

        sys.path.insert(0, str(ROOT / "benchmarks"))
        from engine_batching import ensure_llama_server

        build = ensure_llama_server(version).parent.parent
        subprocess.run(["nice", "-n", "19", "cmake", "--build", str(build), "-j", "2", "--target", "llama-quantize"],
                       check=True, capture_output=True)
    except (ImportError, OSError, subprocess.CalledProcessError) as exc:
        print(f"no llama-quantize ({exc}); the Q4_0 cases are skipped", flush=True)
        return None
    return next(CACHE.glob("llama-cpp-python-*/build/bin/llama-quantize"), None)


def q4_0_copy(model: Path) -> Path | None:
    """A Q4_0 requantization of the model (CPU_REPACK interleaves Q4_0, not Q4_1), made with llama-quantize."""
    target = CACHE / f"{model.stem}.Q4_0-requant.gguf"
    if target.exists():
        return target
    quantize = llama_quantize()
    if quantize is None:
        return None
    subprocess.run([str(quantize), "--allow-requantize", str(model), str(target), "Q4_0"], check=True,
                   capture_output=True)
    return target


def _echo(conn: Any) -> None:
    while (message := conn.recv()) is not None:
        conn.send(message)


def worker_round_trip_us(n: int = 2000) -> float:
    """Median microseconds of one request/reply over a pipe to another process (a step's hand-off cost)."""
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.Process(target=_echo, args=(child,))
    process.start()
    times = []
    payload = {"tokens": list(range(8)), "text": "x" * 64}
    for _ in range(n):
        started = time.perf_counter()
        parent.send(payload)
        parent.recv()
        times.append(time.perf_counter() - started)
    parent.send(None)
    process.join()
    return round(statistics.median(times) * 1e6, 1)


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [f"Measured {r['date']} on {m['cpu']} ({m['cores']} cores, shared with other work: load average "
             f"{m['load_avg_before']} before, {m['load_avg_after']} after), test decodes of 64 prompt + "
             f"{r['tokens']} greedy tokens, median of {r['repeats']} interleaved runs; ratios against "
             "`quiet_default` (2 threads, libgomp's spin-then-sleep default, extra buffers on) of the same run.",
             "", "| case | model | extra buffers | threads | wait | neighbour | decode tok/s | vs quiet default "
             "| prefill tok/s | weight buffers (MiB) |", "|---|---|---|---:|---|---|---:|---:|---:|---|"]
    for name, c in r["cases"].items():
        wait = ", ".join(f"{k}={v}" for k, v in c["env"].items()) or "-"
        buffers = ", ".join(f"{k} {v:.0f}" for k, v in c["buffer_types"].items())
        lines.append(f"| {name} | {c['model'].split('.')[-2]} | {c['extra_buffers']} | {c['threads']} | {wait} | "
                     f"{'busy' if c['contended'] else '-'} | {c['decode_tok_s']} | {c['decode_vs_quiet_default']} | "
                     f"{c['prefill_tok_s']} | {buffers} |")
    sv = r["supervision"]
    lines += ["", f"Supervision: start-up probe {sv['startup_probe_s']} s once; a worker process would add a "
              f"{sv['worker_pipe_round_trip_us']} µs pipe round trip to every {sv['quiet_step_ms']} ms step "
              f"({sv['worker_overhead_per_step']:.2%})."]
    return "\n".join(lines)


def write_doc(table: str) -> None:
    text = DOC.read_text()
    if START not in text:
        return
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    DOC.write_text(f"{head}{START}\n{table}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from garrison.engines import cpu
    from garrison.registry import embedded_model_path

    model = embedded_model_path()
    q4_0 = q4_0_copy(model)
    t = args.threads
    passive = {"OMP_WAIT_POLICY": "PASSIVE"}
    spin = SPIN_DEFAULT
    # garrison's default: up to t threads, t/2 while other processes use the CPUs (engine.adaptive_threads)
    adaptive = {"quiet_adaptive", "busy_adaptive"}
    cases: dict[str, tuple[Path, str, int, dict[str, str], bool]] = {
        "quiet_default": (model, "on", t, spin, False),
        "quiet_adaptive": (model, "on", t, spin, False),
        "busy_adaptive": (model, "on", t, spin, True),
        "quiet_extra_off": (model, "off", t, spin, False),
        "quiet_repack": (model, "repack", t, spin, False),
        "quiet_passive": (model, "on", t, passive, False),
        "quiet_1_thread": (model, "on", 1, spin, False),
        "busy_default": (model, "on", t, spin, True),
        "busy_passive": (model, "on", t, passive, True),
        "busy_active": (model, "on", t, {"OMP_WAIT_POLICY": "ACTIVE"}, True),
        "busy_1_thread": (model, "on", 1, spin, True),
        "busy_1_thread_passive": (model, "on", 1, passive, True),
    }
    if q4_0 is not None:
        cases |= {"q4_0_quiet_extra_on": (q4_0, "on", t, spin, False),
                  "q4_0_quiet_repack": (q4_0, "repack", t, spin, False),
                  "q4_0_quiet_extra_off": (q4_0, "off", t, spin, False)}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
    started = time.time()
    load_before = os.getloadavg()[0]
    for repeat in range(args.repeats):
        for name, (path, mode, threads, env, contended) in cases.items():
            print(f"round {repeat + 1}: {name}", flush=True)
            runs[name].append(probe(path, mode, threads, env, contended, name in adaptive))
    base = statistics.median(r["decode_tok_s"] for r in runs["quiet_default"])
    base_prefill = statistics.median(r["prefill_tok_s"] for r in runs["quiet_default"])
    info = cpu.cpu_info()
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
        "machine": {"cpu": info.model, "cores": info.cores, "amx": info.has_amx, "simd": info.simd,
                    "extra_buffer_types": cpu.extra_buffer_types(), "load_avg_before": round(load_before, 2)},
        "model": model.name, "q4_0_model": q4_0.name if q4_0 else None, "threads": t, "tokens": TOKENS,
        "repeats": args.repeats, "reference": "quiet_default",
        "cases": {},
    }
    for name, (path, mode, threads, env, contended) in cases.items():
        decode = statistics.median(r["decode_tok_s"] for r in runs[name])
        prefill = statistics.median(r["prefill_tok_s"] for r in runs[name])
        result["cases"][name] = {
            "model": path.name, "extra_buffers": mode, "env": env, "contended": contended,
            "threads": f"{max(1, threads // 2)}-{threads} adaptive" if name in adaptive else threads,
            "steps_by_threads": runs[name][-1].get("steps_by_threads"),
            "decode_tok_s": decode, "prefill_tok_s": prefill,
            "decode_runs": [r["decode_tok_s"] for r in runs[name]],
            "decode_vs_quiet_default": round(decode / base, 2),
            "prefill_vs_quiet_default": round(prefill / base_prefill, 2),
            "buffer_types": runs[name][-1]["buffer_types"],
        }
    probe_s = []
    for _ in range(3):
        t0 = time.perf_counter()
        probe(model, "on", t, spin, False)
        probe_s.append(time.perf_counter() - t0)
    result["supervision"] = {
        "startup_probe_s": round(statistics.median(probe_s), 2),
        "worker_pipe_round_trip_us": worker_round_trip_us(),
        "quiet_step_ms": round(1000 / base, 2),
    }
    result["supervision"]["worker_overhead_per_step"] = round(
        result["supervision"]["worker_pipe_round_trip_us"] / 1000 / result["supervision"]["quiet_step_ms"], 4)
    result["machine"]["load_avg_after"] = round(os.getloadavg()[0], 2)
    result["duration_s"] = round(time.time() - started, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    write_doc(markdown(result))
    for name, case in result["cases"].items():
        print(f"{name:28s} decode {case['decode_tok_s']:7.1f} tok/s ({case['decode_vs_quiet_default']:.2f}x)  "
              f"prefill {case['prefill_tok_s']:7.1f} ({case['prefill_vs_quiet_default']:.2f}x)  {case['buffer_types']}")
    print(json.dumps(result["supervision"]))


if __name__ == "__main__":
    main()
