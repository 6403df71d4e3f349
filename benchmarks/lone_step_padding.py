"""What the engine's padding row for lone one-token steps costs, and what it buys (scheduler.LONE_STEP_CELLS).

A context laid out as the engine lays it out (two KV streams, `kv_unified = False`, the same thread counts)
prefills one ~600-token prompt into stream 0, then decodes greedily one token at a time in three ways:

- `lone`: a one-token batch, as llama.cpp gets it with no padding (ggml's split-KV attention at 2+ threads);
- `padded`: the same token plus a padding row in free stream 1, whose cell is removed after the step;
- `lone_1_thread`: a one-token batch on one thread (a single KV chunk: exact, no parallelism);
- `beside`: the same token beside a real second sequence in stream 1 (what a busy server's step looks like);
- `bf16_lone`, `bf16_beside`: `lone` and `beside` with bf16 keys (`engine.cache_type_k`, the default on CPUs
  with bf16 vector code), which ggml's flash attention sends to the per-row kernel at every shape.

Each way runs `--repeats` times, interleaved; the medians of decode tokens/s are compared in the same run, and
each way's logits are compared with `beside`'s (bf16 ways with `bf16_beside`'s): `padded`, `lone_1_thread` and
`bf16_lone` must match bit for bit, `lone` (at 2+ threads) need not (once one greedy token differs, the
sequences part).

    python benchmarks/lone_step_padding.py [--threads 2] [--tokens 64] [--repeats 3]

Results: benchmarks/results/lone_step_padding.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "lone_step_padding.json"
PROMPT = " ".join(f"Entry {n} reads {n * 7 % 13}." for n in range(90)) + "\nThe entry with the largest reading is"
WAYS = ("lone", "lone_1_thread", "padded", "beside", "bf16_lone", "bf16_beside")
GGML_TYPE_BF16 = 30


def run(threads: int, tokens: int, repeats: int) -> dict[str, Any]:
    import logging

    import llama_cpp
    import numpy as np

    from garrison.engines.llama import PROMPT_ROWS_PER_STEP
    from garrison.registry import embedded_model_path

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(str(embedded_model_path()).encode(),
                                                 llama_cpp.llama_model_default_params())
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = 2 * 2048, 512, 512, 2
    params.n_threads = params.n_threads_batch = threads
    params.kv_unified = False
    params.no_perf = True
    contexts = {"f16": llama_cpp.llama_init_from_model(model, params)}
    params.type_k = GGML_TYPE_BF16
    contexts["bf16"] = llama_cpp.llama_init_from_model(model, params)
    vocab = llama_cpp.llama_model_get_vocab(model)
    n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
    text = PROMPT.encode()
    buffer = (llama_cpp.llama_token * (len(text) + 8))()
    prompt = list(buffer[:llama_cpp.llama_tokenize(vocab, text, len(text), buffer, len(buffer), True, False)])
    batch = llama_cpp.llama_batch_init(512, 0, 1)

    def decode(ctx: Any, rows: list[tuple[int, int, int, bool]]) -> None:
        batch.n_tokens = len(rows)
        for i, (token, pos, seq, logits) in enumerate(rows):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.seq_id[i][0], batch.logits[i] = (
                token, pos, 1, seq, logits)
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise SystemExit("llama_decode failed")

    def logits_of(ctx: Any, row: int) -> Any:
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, row), shape=(n_vocab,)).copy()

    def generate(way: str) -> tuple[float, list[Any]]:
        ctx = contexts["bf16" if way.startswith("bf16_") else "f16"]
        memory = llama_cpp.llama_get_memory(ctx)
        llama_cpp.llama_memory_clear(memory, True)
        rows = PROMPT_ROWS_PER_STEP  # the engine's prompt chunks
        for start in range(0, len(prompt), rows):
            chunk = prompt[start:start + rows]
            decode(ctx, [(t, start + i, 0, start + i == len(prompt) - 1) for i, t in enumerate(chunk)])
        seen = [logits_of(ctx, -1)]
        token = int(seen[0].argmax())
        if way.endswith("beside"):
            decode(ctx, [(t, i, 1, False) for i, t in enumerate(prompt[:rows])])
        started = time.perf_counter()
        for i in range(tokens):
            pos = len(prompt) + i
            if way in ("lone", "bf16_lone"):
                decode(ctx, [(token, pos, 0, True)])
            elif way == "lone_1_thread":
                llama_cpp.llama_set_n_threads(ctx, 1, threads)
                decode(ctx, [(token, pos, 0, True)])
                llama_cpp.llama_set_n_threads(ctx, threads, threads)
            elif way == "padded":
                decode(ctx, [(token, pos, 0, True), (token, 0, 1, False)])
                llama_cpp.llama_memory_seq_rm(memory, 1, 0, -1)
            else:
                decode(ctx, [(token, pos, 0, True), (token, rows + i, 1, False)])
            seen.append(logits_of(ctx, 0))
            token = int(seen[-1].argmax())
        return tokens / (time.perf_counter() - started), seen

    rates: dict[str, list[float]] = {way: [] for way in WAYS}
    logits: dict[str, list[Any]] = {}
    for _ in range(repeats):
        for way in WAYS:
            rate, seen = generate(way)
            rates[way].append(round(rate, 1))
            logits[way] = seen
    llama_cpp.llama_batch_free(batch)
    for ctx in contexts.values():
        llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    medians = {way: statistics.median(r) for way, r in rates.items()}
    return {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": threads},
        "prompt_tokens": len(prompt),
        "generated_tokens": tokens,
        "repeats": repeats,
        "decode_tok_s": rates,
        "decode_tok_s_median": medians,
        "padded_vs_lone": round(medians["padded"] / medians["lone"], 3),
        "bf16_lone_vs_padded": round(medians["bf16_lone"] / medians["padded"], 3),
        "bf16_lone_vs_lone": round(medians["bf16_lone"] / medians["lone"], 3),
        "bf16_vs_f16_keys": _key_types_compared(logits["beside"], logits["bf16_beside"]),
        "max_abs_logit_difference_vs_beside": {  # bf16 ways against bf16_beside
            way: float(max(abs(a - b).max() for a, b in zip(
                seen, logits["bf16_beside" if way.startswith("bf16_") else "beside"], strict=True)))
            for way, seen in logits.items()
        },
    }


def _key_types_compared(f16: list[Any], bf16: list[Any]) -> dict[str, Any]:
    """What bf16 keys change against f16 keys: the prompt's last logits, and how long greedy answers agree."""
    greedy = [(int(a.argmax()), int(b.argmax())) for a, b in zip(f16, bf16, strict=True)]
    same = next((i for i, (a, b) in enumerate(greedy) if a != b), len(greedy))
    return {"prompt_logits_max_abs_difference": round(float(abs(f16[0] - bf16[0]).max()), 4),
            "prompt_top1_equal": greedy[0][0] == greedy[0][1],
            "greedy_tokens_equal_before_first_difference": same, "of": len(greedy)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    result = run(args.threads, args.tokens, args.repeats)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
