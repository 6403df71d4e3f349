"""The embedded llama.cpp engine: continuous batching over llama-cpp-python's low-level bindings, in-process.

Each model gets one llama.cpp context with `max_concurrent_sequences` sequence slots, each with its own KV
stream of `context_length` cells; one decode thread per process steps every context (`scheduler.py` has
the step, `kvcache.py` slots and prefix reuse, `sampling.py` the samplers).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import time
from collections.abc import AsyncIterator

import llama_cpp

from garrison.domain import GenerationEvent, GenerationRequest, GenerationStarted
from garrison.engines import cpu
from garrison.engines.base import Embedder, Engine
from garrison.engines.choices import ChoiceQueue, ChoiceStream, Tagged, merge
from garrison.engines.contention import ThreadGovernor
from garrison.engines.cpu import default_threads
from garrison.engines.gguf import GgufModel, gguf_of
from garrison.engines.logprobs import MAX_TOP_LOGPROBS
from garrison.engines.prompt import ControlToken, Prompt, build_prompt, control_tokens, tokenize_prompt
from garrison.engines.sampling import SamplerChain, build_sampler, json_grammar, sampling_seed
from garrison.engines.scheduler import BatchScheduler, DecodeLoop, Sequence
from garrison.engines.text import TextStream
from garrison.engines.tools.plan import plan_tools
from garrison.errors import (
    ConfigError,
    ContextLengthExceeded,
    EngineError,
    EngineUnavailable,
    GarrisonError,
    InvalidRequest,
)
from garrison.registry import ModelInfo
from garrison.settings import Settings

log = logging.getLogger(__name__)

# llama.cpp's LLAMA_MAX_SEQ: the most sequence ids one context can hold.
MAX_SEQUENCES = 256
# ggml's CPU flash attention switches to a tiled kernel, which sums in another order, once one sequence
# brings 64 query rows to a decode call. Prompt chunks stay below that, so a token's numbers are the same
# however its prompt was split: batching and prefix reuse never change an answer.
PROMPT_ROWS_PER_STEP = 63


def create_engines(models: list[ModelInfo], settings: Settings) -> dict[str, Engine | Embedder]:
    """One engine per GGUF model; a single decode thread steps them all, so two never decode at once."""
    most, fewest = cpu.thread_range(settings.engine.threads, settings.engine.adaptive_threads)
    loop = DecodeLoop(ThreadGovernor(most, fewest) if fewest < most else None)
    engines: dict[str, Engine | Embedder] = {}
    for model in models:
        gguf = gguf_of(model)
        if gguf is None:
            raise ConfigError(f"model '{model.id}' is no GGUF model; the llama engine cannot serve it")
        engines[model.id] = LlamaEngine(gguf, settings, loop)
    return engines


class LlamaEngine:
    """Serves one GGUF model: many concurrent sequences batched into each llama.cpp decode step."""

    def __init__(self, info: GgufModel, settings: Settings, loop: DecodeLoop) -> None:
        engine = settings.engine
        n_slots = engine.max_concurrent_sequences
        if not 1 <= n_slots <= MAX_SEQUENCES:
            raise ConfigError(f"engine.max_concurrent_sequences must be 1..{MAX_SEQUENCES}, not {n_slots}")
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # llama.cpp's own load chatter
        llama_cpp.llama_backend_init()
        self.info = info
        load_started = time.perf_counter_ns()
        threads = engine.threads or default_threads()  # the most; the decode loop's governor may use fewer
        self.buffers = cpu.choose_buffers(info, engine.cpu_extra_buffers, threads)
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = info.n_gpu_layers
        self.buffers.apply(model_params)
        with cpu.BufferLog() as buffer_log:
            self._model = llama_cpp.llama_model_load_from_file(str(info.path).encode(), model_params)
        self.buffer_types = buffer_log.sizes  # e.g. {"CPU_Mapped": 98.3, "CPU_REPACK": 40.1} MiB
        if not self._model:
            raise EngineError(f"llama.cpp could not load model '{info.id}' from {info.path}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self._eog_ids = [t for t in range(self._n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t)]
        self._bos = int(llama_cpp.llama_vocab_bos(self._vocab))
        self._pieces: dict[int, bytes] = {}
        self._controls: dict[str, ControlToken] | None = None
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self._trust_raw = engine.raw_prompt_control_tokens
        n_batch = max(min(engine.batch_size, info.context_length * n_slots), n_slots)
        ctx_params = llama_cpp.llama_context_default_params()
        ctx_params.n_ctx = info.context_length * n_slots
        ctx_params.n_batch = n_batch
        ctx_params.n_ubatch = n_batch
        ctx_params.n_seq_max = n_slots
        ctx_params.n_threads = ctx_params.n_threads_batch = threads  # one-token steps and batches alike
        ctx_params.kv_unified = False  # one stream per sequence: see kvcache.py
        self.cache_type_k = cpu.key_cache_type(engine.cache_type_k, on_gpu=info.n_gpu_layers != 0,
                                               batch_invariant=engine.batch_invariant)
        ctx_params.type_k = cpu.GGML_TYPES[self.cache_type_k]  # bf16: the per-row attention kernel always
        ctx_params.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(self._model, ctx_params)
        if not self._ctx:
            raise EngineError(
                f"llama.cpp could not create a context for '{info.id}' ({n_slots} sequences x "
                f"{info.context_length} tokens of KV cache); lower max_concurrent_sequences or context_length"
            )
        self.load_ns = time.perf_counter_ns() - load_started
        self._scheduler = BatchScheduler(
            ctx=self._ctx,
            memory=llama_cpp.llama_get_memory(self._ctx),
            n_slots=n_slots,
            n_batch=n_batch,
            # without the guarantee, a prompt may bring up to n_batch rows (ggml's tiled attention) to a step
            rows_per_sequence=PROMPT_ROWS_PER_STEP if engine.batch_invariant else n_batch,
            prefill_while_decoding=engine.prefill_budget,
            prefix_cache=engine.prefix_cache,
            piece=self.piece,
            eog=frozenset(self._eog_ids),
            name=info.id,
            threads=threads,
            batch_invariant=engine.batch_invariant,
            lone_steps_split=self.cache_type_k == "f16",  # f16 keys and values: ggml's split-KV kernel
            slot_capacity=info.context_length,
        )
        self.kv_cells_total = int(llama_cpp.llama_n_ctx(self._ctx))
        self.threads = threads
        self._loop = loop
        self._closed = False
        self.n_slots = n_slots
        loop.attach(self._scheduler)
        governor = loop.governor
        log.info("llama engine %s: %d slots x %d tokens, batch %d, %s threads, %s keys, extra buffers %s (%s)",
                 info.id, n_slots, info.context_length, n_batch,
                 f"{governor.fewest}-{governor.most} (by contention)" if governor else threads, self.cache_type_k,
                 self.buffers.mode,
                 ", ".join(f"{k} {v:.0f} MiB" for k, v in self.buffer_types.items()) or "-")

    def tokenize(self, text: str, *, add_bos: bool, special: bool = True) -> list[int]:
        """Token ids of `text`; `special`: control-token text becomes control tokens (trusted text only)."""
        data = text.encode("utf-8")
        capacity = len(data) + 8
        while True:
            buffer = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buffer, capacity, add_bos, special)
            if n >= 0:
                return list(buffer[:n])
            capacity = -n

    def tokenize_prompt(self, prompt: Prompt, *, add_bos: bool) -> list[int]:
        """A prompt's token ids: control tokens only where the template wrote them."""
        if self._controls is None:
            self._controls = control_tokens(self._vocab, self._n_vocab)
        bos = self._bos if add_bos and self._add_bos and self._bos >= 0 else None
        return tokenize_prompt(prompt, self._controls, lambda t: self.tokenize(t, add_bos=False, special=False), bos)

    def piece(self, token: int) -> bytes:
        """The bytes one token stands for (special tokens render as nothing); cached per token id."""
        cached = self._pieces.get(token)
        if cached is not None:
            return cached
        size = 64
        while True:
            buffer = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, size, 0, False)
            if n >= 0:
                break
            size = -n
        self._pieces[token] = piece = buffer.raw[:n]
        return piece

    def metrics(self) -> dict[str, int]:
        """Running and waiting sequences, token totals, KV cells in use and prefix-cache hits."""
        governor = self._loop.governor
        return {**self._scheduler.metrics(), "kv_cells_total": self.kv_cells_total,
                "healthy": int(self.failure() is None), "loop_restarts_total": self._loop.restarts,
                "threads": self._scheduler.threads,
                "thread_switches_total": governor.switches if governor is not None else 0}

    def failure(self) -> str | None:
        """Why this engine cannot serve right now (its decode loop is down or recovering), else None."""
        if self._closed:
            return "the engine is closed"
        return self._loop.failure()

    def abort(self, error: GarrisonError) -> None:
        """Fail every running and queued request with `error` before the next step (shutdown past its drain)."""
        self._scheduler.abort(error)

    async def aclose(self) -> None:
        """Fail what is still running, stop the decode thread (with the last engine), free context and model."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._loop.detach, self._scheduler)
        self._scheduler.close(EngineUnavailable("the server is shutting down"))
        llama_cpp.llama_free(self._ctx)
        llama_cpp.llama_model_free(self._model)
        self._ctx = self._model = None

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Queue the request's choices for the batch; closing this iterator cancels them and frees their slots."""
        if self._closed:
            raise EngineUnavailable(f"the engine of '{self.info.id}' is shut down")
        s = request.sampling
        self._check_choices(s.n, s.top_logprobs if s.logprobs else 0)
        tools = plan_tools(self.info, request) if request.is_chat else None
        prompt = build_prompt(self.info, request, tools, trust_raw=self._trust_raw)
        template_stops = prompt.stops
        if request.prompt_tokens is not None:
            tokens = self._checked_ids(request.prompt_tokens)
        else:
            tokens = await asyncio.to_thread(self.tokenize_prompt, prompt, add_bos=not request.is_chat)
        if not tokens:
            if self._bos < 0:
                raise InvalidRequest("the prompt is empty", param="prompt")
            tokens = [self._bos]
        budget = self._budget(len(tokens), s.max_tokens)
        tool_grammar = tools.grammar() if tools else None
        grammar: str | None
        triggers: tuple[str, ...]
        if tool_grammar is not None and not (tool_grammar.triggers and request.response_format is not None):
            grammar, triggers = tool_grammar.text, tool_grammar.triggers
        else:  # no tools, or tool_choice auto with a response_format: the format's grammar wins
            grammar, triggers = json_grammar(request.response_format), ()
        samplers: list[SamplerChain] = []
        try:
            for i in range(s.n):
                samplers.append(build_sampler(
                    self._vocab, self._n_vocab, s, grammar=grammar, eog_ids=self._eog_ids,
                    seed=sampling_seed(None if s.seed is None else s.seed + i), triggers=triggers,
                    logprobs=s.top_logprobs if s.logprobs else None,
                ))
        except BaseException:
            for sampler in samplers:
                sampler.close()
            raise
        shared: asyncio.Queue[Tagged] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        seqs = [
            Sequence(request_id=request.request_id, prompt=tokens, budget=budget, sampler=sampler,
                     text=TextStream(stop=list(s.stop) + template_stops), loop=loop, queue=ChoiceQueue(shared, i))
            for i, sampler in enumerate(samplers)
        ]
        seqs[0].forks = seqs[1:]
        streams = [ChoiceStream(i, seq.sampler, tools.parser() if tools else None, self.piece, s.logprobs)
                   for i, seq in enumerate(seqs)]
        # The counted prompt goes out before any decode work: a consumer that refuses it (a quota too small
        # for it) closes the stream here, and nothing was prefilled.
        try:
            yield GenerationStarted(prompt_tokens=len(tokens))
            self._scheduler.submit(seqs[0])
        except BaseException:
            for sampler in samplers:
                sampler.close()
            raise
        try:
            async for event in merge(shared, streams):
                yield event
        finally:
            for seq in seqs:
                self._scheduler.cancel(seq)

    def _check_choices(self, n: int, top_logprobs: int) -> None:
        if not 1 <= n <= self.n_slots:
            raise InvalidRequest(
                f"n must be between 1 and {self.n_slots} for model '{self.info.id}' (its "
                "engine.max_concurrent_sequences): the choices decode side by side", param="n")
        if not 0 <= top_logprobs <= MAX_TOP_LOGPROBS:
            raise InvalidRequest(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}", param="top_logprobs")

    def _checked_ids(self, ids: list[int]) -> list[int]:
        """A prompt given as token ids: they must be ids of this model's own vocabulary."""
        bad = next((t for t in ids if not 0 <= t < self._n_vocab), None)
        if bad is not None:
            raise InvalidRequest(
                f"prompt token {bad} is not in the vocabulary of model '{self.info.id}' ({self._n_vocab} tokens); "
                "token ids must come from this model's own tokenizer, so send the prompt as text instead",
                param="prompt")
        return list(ids)

    def _budget(self, n_prompt: int, max_tokens: int | None) -> int:
        """Tokens the request may generate within one slot's context, or ContextLengthExceeded."""
        n_ctx = self.info.context_length
        if n_prompt >= n_ctx:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {n_ctx} tokens, but the prompt is {n_prompt} "
                "tokens. Shorten the prompt.",
                param="messages",
            )
        if max_tokens is not None and n_prompt + max_tokens > n_ctx:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {n_ctx} tokens, but {n_prompt + max_tokens} tokens "
                f"were requested ({n_prompt} in the prompt, {max_tokens} for the completion). "
                "Reduce the prompt or max_tokens.",
                param="max_tokens",
            )
        return max_tokens if max_tokens is not None else n_ctx - n_prompt
