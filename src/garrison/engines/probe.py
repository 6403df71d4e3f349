"""A test decode of one GGUF model, run as a child process so that a native crash is a result, not an outage.

    python -m garrison.engines.probe MODEL.gguf [--extra-buffers on|repack|off] [--threads N] [--tokens 16]
                                     [--adaptive]

Loads the model with the given extra-buffer mode, prefills a 64-token prompt, then decodes greedily one
token at a time, and prints one JSON line: prefill and decode tokens/s and the weight buffer types used.
`--adaptive` lets the server's thread governor choose between N and N/2 threads before every step, as
`engine.adaptive_threads` does (contention.py); the line then counts the steps run at each.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

PROMPT = ("The lighthouse keeper climbed the stairs every evening, counting the steps, and wrote down the "
          "colour of the sea, the direction of the wind and the ships he saw passing the point.")
PROMPT_TOKENS = 64


def probe(path: Path, mode: str, threads: int, tokens: int, adaptive: bool = False) -> dict[str, object]:
    import logging

    import llama_cpp
    import numpy as np

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)

    from garrison.engines import cpu
    from garrison.engines.contention import ThreadGovernor

    most, fewest = cpu.thread_range(threads, adaptive)
    governor = ThreadGovernor(most, fewest)  # its first window runs while the model loads
    steps: dict[int, int] = {}  # thread count -> steps run with it
    current = most  # the context's thread count now

    llama_cpp.llama_backend_init()
    buffers = cpu.plan(mode, cpu._layout(path) if mode == "repack" else [])  # type: ignore[arg-type]
    params = llama_cpp.llama_model_default_params()
    buffers.apply(params)
    with cpu.BufferLog() as buffer_log:
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise SystemExit(f"llama.cpp could not load {path}")
    ctx_params = llama_cpp.llama_context_default_params()
    ctx_params.n_ctx, ctx_params.n_batch, ctx_params.n_ubatch = 256, PROMPT_TOKENS, PROMPT_TOKENS
    ctx_params.n_threads = ctx_params.n_threads_batch = threads
    ctx_params.no_perf = True
    ctx = llama_cpp.llama_init_from_model(model, ctx_params)
    vocab = llama_cpp.llama_model_get_vocab(model)
    n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
    text = (PROMPT * 4).encode()
    buffer = (llama_cpp.llama_token * (len(text) + 8))()
    n = llama_cpp.llama_tokenize(vocab, text, len(text), buffer, len(buffer), True, False)
    prompt = list(buffer[:min(n, PROMPT_TOKENS)])
    batch = llama_cpp.llama_batch_init(PROMPT_TOKENS, 0, 1)

    def decode(items: list[int], start: int) -> int:
        nonlocal current
        n = governor.threads()
        if n != current:
            llama_cpp.llama_set_n_threads(ctx, n, n)
            current = n
        steps[n] = steps.get(n, 0) + 1
        batch.n_tokens = len(items)
        for i, token in enumerate(items):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, start + i, 1
            batch.seq_id[i][0], batch.logits[i] = 0, i == len(items) - 1
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise SystemExit("llama_decode failed")
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
        return int(logits.argmax())

    governor.settle()
    started = time.perf_counter()
    token = decode(prompt, 0)
    prefilled = time.perf_counter()
    for i in range(tokens):
        token = decode([token], len(prompt) + i)
    ended = time.perf_counter()
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    return {
        "mode": buffers.mode,
        "prefill_tok_s": round(len(prompt) / (prefilled - started), 1),
        "decode_tok_s": round(tokens / (ended - prefilled), 1) if tokens else 0.0,
        "buffer_types": buffer_log.sizes,
        "repacked_tensors": len(buffers.repacked),
        "steps_by_threads": {str(k): v for k, v in sorted(steps.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--extra-buffers", default="on", choices=["on", "repack", "off"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--adaptive", action="store_true", help="Threads chosen per step by measured contention.")
    args = parser.parse_args()
    result = probe(args.model, args.extra_buffers, args.threads, args.tokens, args.adaptive)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
