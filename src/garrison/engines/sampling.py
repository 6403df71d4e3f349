"""Per-sequence sampling on llama.cpp's native sampler chains: penalties, top-k/p, temperature, grammar."""

from __future__ import annotations

import ctypes
import json
import random
from typing import Any

import llama_cpp
import numpy as np

from garrison.domain import ResponseFormat, SamplingParams
from garrison.engines.logprobs import Record, record
from garrison.errors import EngineError, InvalidRequest

# Tokens the repetition/frequency/presence penalties look back over (llama-cpp-python's default).
PENALTY_LAST_N = 64
# llama.cpp reads this seed value as "pick one at random", so a request's seed is folded below it.
_RANDOM_SEED = 0xFFFFFFFF


def json_grammar(fmt: ResponseFormat | None) -> str | None:
    """GBNF text enforcing JSON (any object, or valid against a JSON schema); None for plain text."""
    if fmt is None or fmt.type == "text":
        return None
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    schema: dict[str, Any] = fmt.schema if fmt.type == "json_schema" and fmt.schema else {"type": "object"}
    try:
        return json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # noqa: BLE001 - the converter raises plain exceptions on bad schemas
        raise InvalidRequest(
            f"response_format.json_schema could not be turned into a grammar: {exc}",
            param="response_format",
        ) from exc


def sampling_seed(seed: int | None) -> int:
    """The 32-bit seed of a sequence's `dist` sampler: the request's, or a random one."""
    if seed is None:
        return random.getrandbits(31)
    return seed % _RANDOM_SEED


_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])  # llama_token_data


class SamplerChain:
    """One sequence's native samplers, freed exactly once.

    With a grammar, a token is first sampled without it and only checked against the grammar; the full
    vocabulary goes through the grammar (milliseconds per token) only when that token is rejected. This
    is llama.cpp's own `common_sampler` strategy; greedy decoding picks the same token either way.
    """

    __slots__ = ("_chain", "_grammar", "_n_vocab", "_candidates", "_array", "_probe", "_probe_array", "_top",
                 "records", "_argmax")

    def __init__(self, chain: Any, grammar: Any = None, n_vocab: int = 0, logprobs: int | None = None,
                 argmax: frozenset[int] | None = None) -> None:
        self._chain = chain
        # A chain that is only greedy (plus -inf biases on `argmax`'s tokens) picks the first highest logit;
        # numpy finds it in ~6 us where llama.cpp's sampler copies the vocabulary first (~50 us a token).
        self._argmax = argmax
        self._grammar = grammar
        self._n_vocab = n_vocab
        self._top = logprobs  # None: no logprobs; else how many alternatives to keep per token
        self.records: list[Record] = []  # one per sampled token when logprobs are on (see logprobs.py)
        self._candidates: np.ndarray | None = None
        self._array = llama_cpp.llama_token_data_array()
        self._probe = np.zeros(1, dtype=_TOKEN_DATA)
        self._probe_array = llama_cpp.llama_token_data_array()

    def sample(self, ctx: Any, index: int) -> int:
        """Sample (and accept) a token from the logits of batch output `index` of the last decode."""
        if self._argmax is not None:
            logits = self._logits(ctx, index)
            token = int(logits.argmax())
            if token in self._argmax:  # ignore_eos: end tokens count as -inf, the next best is taken
                masked = logits.copy()
                masked[list(self._argmax)] = -np.inf
                token = int(masked.argmax())
            if self._top is not None:
                self.records.append(record(logits, token, self._top))
            return token
        if self._grammar is None:
            token = int(llama_cpp.llama_sampler_sample(self._chain, ctx, index))
            if self._top is not None:
                self.records.append(record(self._logits(ctx, index), token, self._top))
            return token
        logits = self._logits(ctx, index)
        token = self._pick(logits, constrained=False)
        if not self._allowed(token):
            token = self._pick(logits, constrained=True)
        llama_cpp.llama_sampler_accept(self._grammar, token)
        llama_cpp.llama_sampler_accept(self._chain, token)
        if self._top is not None:
            self.records.append(record(logits, token, self._top))
        return token

    def _logits(self, ctx: Any, index: int) -> np.ndarray:
        """The raw logits row of batch output `index` (samplers work on copies, so it is unchanged)."""
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, index), shape=(self._n_vocab,))

    def _pick(self, logits: np.ndarray, *, constrained: bool) -> int:
        if self._candidates is None:
            self._candidates = np.zeros(self._n_vocab, dtype=_TOKEN_DATA)
        candidates = self._candidates
        candidates["id"] = np.arange(self._n_vocab, dtype=np.int32)
        candidates["logit"] = logits
        candidates["p"] = 0.0
        array = _point(self._array, candidates)
        if constrained:
            llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(array))
        llama_cpp.llama_sampler_apply(self._chain, ctypes.byref(array))
        return int(array.data[array.selected].id)

    def _allowed(self, token: int) -> bool:
        """Whether the grammar accepts `token` next (it sets a rejected token's logit to -inf)."""
        self._probe[0] = (token, 0.0, 0.0)
        llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(_point(self._probe_array, self._probe)))
        return bool(np.isfinite(self._probe["logit"][0]))

    def close(self) -> None:
        """Free the native samplers."""
        for handle in (self._chain, self._grammar):
            if handle is not None:
                llama_cpp.llama_sampler_free(handle)
        self._chain = self._grammar = None


def _point(array: Any, candidates: np.ndarray) -> Any:
    """Aim a llama_token_data_array at `candidates`, unsorted, nothing selected."""
    array.data = candidates.ctypes.data_as(llama_cpp.llama_token_data_p)
    array.size = len(candidates)
    array.selected = -1
    array.sorted = False
    return array


def build_sampler(
    vocab: Any,
    n_vocab: int,
    params: SamplingParams,
    *,
    grammar: str | None,
    eog_ids: list[int],
    seed: int,
    triggers: tuple[str, ...] = (),
    logprobs: int | None = None,
) -> SamplerChain:
    """The chain for one request, in llama.cpp's order: bias, penalties, then truncation and pick; plus the
    grammar, kept beside the chain (see `SamplerChain`).

    `ignore_eos` becomes a -inf logit bias on every end-of-generation token, except under a grammar, where
    the end token is how a finished JSON document ends the sequence. With `triggers` the grammar is lazy:
    output is free until one of these regular expressions matches it (a tool call begins), constrained after.
    `logprobs` (alternatives per token) records each sampled token's logprob on the chain.
    """
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    constraint = None
    banned = frozenset(eog_ids) if params.ignore_eos and grammar is None else frozenset()
    penalised = params.repeat_penalty != 1.0 or bool(params.frequency_penalty) or bool(params.presence_penalty)
    try:
        if grammar is not None and triggers:
            patterns = (ctypes.c_char_p * len(triggers))(*[t.encode("utf-8") for t in triggers])
            constraint = llama_cpp.llama_sampler_init_grammar_lazy_patterns(
                vocab, grammar.encode("utf-8"), b"root", patterns, len(triggers), None, 0)
            if not constraint:
                raise InvalidRequest("tools produced a grammar llama.cpp cannot parse", param="tools")
        elif grammar is not None:
            constraint = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
            if not constraint:
                raise InvalidRequest("response_format produced a grammar llama.cpp cannot parse",
                                     param="response_format")
        if banned:
            biases = (llama_cpp.llama_logit_bias * len(eog_ids))(
                *[llama_cpp.llama_logit_bias(token, float("-inf")) for token in eog_ids]
            )
            _add(chain, llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(eog_ids), biases))
        if penalised:
            _add(chain, llama_cpp.llama_sampler_init_penalties(
                n_vocab, PENALTY_LAST_N, params.repeat_penalty, params.frequency_penalty,
                params.presence_penalty,
            ))
        if params.temperature <= 0.0:
            _add(chain, llama_cpp.llama_sampler_init_greedy())
        else:
            if params.top_k > 0:
                _add(chain, llama_cpp.llama_sampler_init_top_k(params.top_k))
            if params.top_p < 1.0:
                _add(chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
            if params.min_p > 0.0:
                _add(chain, llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
            _add(chain, llama_cpp.llama_sampler_init_temp(params.temperature))
            _add(chain, llama_cpp.llama_sampler_init_dist(seed))
    except BaseException:
        SamplerChain(chain, constraint).close()
        raise
    argmax = banned if params.temperature <= 0.0 and not penalised and grammar is None else None
    return SamplerChain(chain, constraint, n_vocab, logprobs, argmax)


def _add(chain: Any, sampler: Any) -> None:
    if not sampler:
        raise EngineError("llama.cpp could not create a sampler")
    llama_cpp.llama_sampler_chain_add(chain, sampler)
