"""What the engine's padding row for lone one-token steps costs, and what it buys (scheduler.LONE_STEP_CELLS).

A context laid out as the engine lays it out (two KV streams, `kv_unified = False`, the same thread counts)
prefills one ~600-token prompt into stream 0, then decodes greedily one token at a time in three ways:

- `lone`: a one-token batch, as llama.cpp gets it with no padding (ggml's split-KV attention at 2+ threads);
- `padded`: the same token plus a padding row in free stream 1, whose cell is removed after the step;
- `lone_1_thread`: a one-token batch on one thread (a single KV chunk: exact, no parallelism);
- `beside`: the same token beside a real second sequence in stream 1 (what a busy server's step looks like).

Each way runs `--repeats` times, interleaved; the medians of decode tokens/s are compared in the same run, and
each way's logits are compared with `beside`'s: `padded` and `lone_1_thread` must match it bit for bit,
`lone` (at 2+ threads) need not (once one greedy token differs, the sequences part).

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
WAYS = ("lone", "lone_1_thread", "padded", "beside")


def run(threads: int, tokens: int, repeats: int) -> dict[str, Any]:
    import logging

    import llama_cpp
    import numpy as np

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
    ctx = llama_cpp.llama_init_from_model(model, params)
    memory = llama_cpp.llama_get_memory(ctx)
    vocab = llama_cpp.llama_model_get_vocab(model)
    n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
    text = PROMPT.encode()
    buffer = (llama_cpp.llama_token * (len(text) + 8))()
    prompt = list(buffer[:llama_cpp.llama_tokenize(vocab, text, len(text), buffer, len(buffer), True, False)])
    batch = llama_cpp.llama_batch_init(512, 0, 1)

    def decode(rows: list[tuple[int, int, int, bool]]) -> None:
        batch.n_tokens = len(rows)
        for i, (token, pos, seq, logits) in enumerate(rows):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.seq_id[i][0], batch.logits[i] = (
                token, pos, 1, seq, logits)
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise SystemExit("llama_decode failed")

    def logits_of(row: int) -> Any:
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, row), shape=(n_vocab,)).copy()

    def generate(way: str) -> tuple[float, list[Any]]:
        llama_cpp.llama_memory_clear(memory, True)
        for start in range(0, len(prompt), 64):  # the engine's prompt chunks (PROMPT_ROWS_PER_STEP-sized)
            chunk = prompt[start:start + 64]
            decode([(t, start + i, 0, start + i == len(prompt) - 1) for i, t in enumerate(chunk)])
        seen = [logits_of(-1)]
        token = int(seen[0].argmax())
        if way == "beside":
            decode([(t, i, 1, False) for i, t in enumerate(prompt[:64])])
        started = time.perf_counter()
        for i in range(tokens):
            pos = len(prompt) + i
            if way == "lone":
                decode([(token, pos, 0, True)])
            elif way == "lone_1_thread":
                llama_cpp.llama_set_n_threads(ctx, 1, threads)
                decode([(token, pos, 0, True)])
                llama_cpp.llama_set_n_threads(ctx, threads, threads)
            elif way == "padded":
                decode([(token, pos, 0, True), (token, 0, 1, False)])
                llama_cpp.llama_memory_seq_rm(memory, 1, 0, -1)
            else:
                decode([(token, pos, 0, True), (token, 64 + i, 1, False)])
            seen.append(logits_of(0))
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
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    reference = logits["beside"]
    medians = {way: statistics.median(r) for way, r in rates.items()}
    return {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": threads},
        "prompt_tokens": len(prompt),
        "generated_tokens": tokens,
        "repeats": repeats,
        "decode_tok_s": rates,
        "decode_tok_s_median": medians,
        "padded_vs_lone": round(medians["padded"] / medians["lone"], 3),
        "max_abs_logit_difference_vs_beside": {
            way: float(max(abs(a - b).max() for a, b in zip(seen, reference, strict=True)))
            for way, seen in logits.items()
        },
    }


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
