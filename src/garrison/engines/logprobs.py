"""Log-probabilities of sampled tokens, read from the logits row the sampler drew from.

They are the model's own distribution (a log-softmax over the raw logits), before temperature, top-k/p,
penalties or a grammar reshape it: the same numbers at any temperature, and vLLM's default. A token that a
grammar or top-k forced may therefore have a low logprob.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# OpenAI's limit for top_logprobs.
MAX_TOP_LOGPROBS = 20


@dataclass(slots=True)
class Record:
    """One sampled token's logprob and its `top` likeliest alternatives (token id, logprob)."""

    token: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


def record(logits: np.ndarray, token: int, top: int) -> Record:
    """Log-softmax of one logits row at `token`, with the `top` highest entries."""
    peak = float(logits.max())
    log_total = peak + float(np.log(np.exp(logits - peak, dtype=np.float64).sum()))
    alternatives: list[tuple[int, float]] = []
    if top > 0:
        k = min(top, logits.shape[0])
        ids = np.argpartition(-logits, k - 1)[:k]
        ids = ids[np.argsort(-logits[ids], kind="stable")]
        alternatives = [(int(i), float(logits[i]) - log_total) for i in ids]
    return Record(token=token, logprob=float(logits[token]) - log_total, top=alternatives)
