"""The embedded llama.cpp engine (llama-cpp-python, in-process). One decode thread per process."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from garrison.domain import (
    GenerationDone,
    GenerationEvent,
    GenerationRequest,
    ResponseFormat,
    Timings,
    TokenDelta,
    Usage,
)
from garrison.engines.base import Embedder, Engine
from garrison.engines.prompt import build_prompt
from garrison.engines.text import TextStream
from garrison.errors import ContextLengthExceeded, EngineError, InvalidRequest
from garrison.registry import ModelInfo
from garrison.settings import Settings

log = logging.getLogger(__name__)


def create_engines(models: list[ModelInfo], settings: Settings) -> dict[str, Engine | Embedder]:
    """One engine per GGUF model; they share a single decode thread so two never decode at once."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama-decode")
    return {m.id: LlamaEngine(m, settings, executor) for m in models if m.kind == "generate"}


class LlamaEngine:
    """Runs one GGUF model with llama.cpp; generation happens on the shared decode thread."""

    def __init__(self, info: ModelInfo, settings: Settings, executor: ThreadPoolExecutor) -> None:
        from llama_cpp import Llama

        self.info = info
        self._executor = executor
        threads = settings.engine.threads or os.cpu_count() or 1
        load_started = time.perf_counter_ns()
        self._llm = Llama(
            model_path=str(info.path),
            n_ctx=info.context_length,
            n_batch=min(settings.engine.batch_size, info.context_length),
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=info.n_gpu_layers,
            verbose=False,
        )
        self.load_ns = time.perf_counter_ns() - load_started
        self._vocab = self._llm._model.vocab
        self._eog_ids = [t for t in range(self._llm.n_vocab()) if self._is_eog(t)]
        self._eog_set = frozenset(self._eog_ids)

    def _is_eog(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        prompt, template_stops = build_prompt(self.info, request)
        tokens = await asyncio.to_thread(self.tokenize, prompt, add_bos=not request.is_chat)
        budget = self._budget(len(tokens), request.sampling.max_tokens)
        grammar = _grammar(request.response_format)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[GenerationEvent | BaseException] = asyncio.Queue()
        cancel = threading.Event()

        def emit(event: GenerationEvent | BaseException) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, event)

        submitted = time.perf_counter_ns()
        self._executor.submit(
            self._run, tokens, budget, request, template_stops, grammar, emit, cancel, submitted
        )
        try:
            while True:
                event = await queue.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if isinstance(event, GenerationDone):
                    return
        finally:
            cancel.set()

    def _budget(self, n_prompt: int, max_tokens: int | None) -> int:
        n_ctx = self.info.context_length
        if n_prompt >= n_ctx:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {n_ctx} tokens, but the prompt is {n_prompt} tokens. "
                "Shorten the prompt.",
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

    def _run(
        self,
        tokens: list[int],
        budget: int,
        request: GenerationRequest,
        template_stops: list[str],
        grammar: Any,
        emit: Callable[[GenerationEvent | BaseException], None],
        cancel: threading.Event,
        submitted_ns: int,
    ) -> None:
        started = time.perf_counter_ns()
        try:
            if cancel.is_set():
                return
            done = self._decode(tokens, budget, request, template_stops, grammar, emit, cancel)
            done.timings.queued_ns = started - submitted_ns
            done.timings.load_ns = 0
            emit(done)
        except Exception as exc:  # noqa: BLE001 - reported to the waiting request, logged there
            log.exception("llama engine failed on request %s", request.request_id)
            emit(EngineError(f"the engine failed while generating: {type(exc).__name__}"))

    def _decode(
        self,
        tokens: list[int],
        budget: int,
        request: GenerationRequest,
        template_stops: list[str],
        grammar: Any,
        emit: Callable[[GenerationEvent | BaseException], None],
        cancel: threading.Event,
    ) -> GenerationDone:
        from llama_cpp import LogitsProcessorList

        s = request.sampling
        llm = self._llm
        llm.set_seed(s.seed if s.seed is not None else random.getrandbits(31))
        processors = LogitsProcessorList([self._suppress_eog]) if s.ignore_eos else None
        text = TextStream(stop=list(s.stop) + template_stops)
        cached = _common_prefix(llm._input_ids[: llm.n_tokens].tolist(), tokens)
        start = time.perf_counter_ns()
        first_token_ns = 0
        generated: list[int] = []
        pending_tokens = 0
        finish = "length"
        generator = llm.generate(
            tokens,
            top_k=s.top_k,
            top_p=s.top_p,
            min_p=s.min_p,
            temp=s.temperature,
            repeat_penalty=s.repeat_penalty,
            frequency_penalty=s.frequency_penalty,
            presence_penalty=s.presence_penalty,
            grammar=grammar,
            logits_processor=processors,
            reset=True,
        )
        try:
            for token in generator:
                if not first_token_ns:
                    first_token_ns = time.perf_counter_ns()
                if cancel.is_set():
                    finish = "cancelled"
                    break
                if not s.ignore_eos and token in self._eog_set:
                    finish = "stop"
                    break
                piece = llm.detokenize([token], prev_tokens=tokens + generated)
                generated.append(token)
                pending_tokens += 1
                result = text.feed(piece)
                if result.text:
                    emit(TokenDelta(result.text, pending_tokens))
                    pending_tokens = 0
                if result.stopped:
                    finish = "stop"
                    break
                if len(generated) >= budget:
                    break
        finally:
            generator.close()
        if finish != "cancelled":
            tail = text.finish()
            if tail or pending_tokens:
                emit(TokenDelta(tail, pending_tokens))
        end = time.perf_counter_ns()
        first_token_ns = first_token_ns or end
        return GenerationDone(
            finish_reason=finish,  # type: ignore[arg-type]
            usage=Usage(prompt_tokens=len(tokens), completion_tokens=len(generated), cached_tokens=cached),
            timings=Timings(
                prompt_eval_ns=first_token_ns - start,
                eval_ns=end - first_token_ns,
                total_ns=end - start,
            ),
        )

    def _suppress_eog(self, _ids: Any, scores: np.ndarray) -> np.ndarray:
        scores[self._eog_ids] = -np.inf
        return scores


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _grammar(fmt: ResponseFormat | None) -> Any:
    """A llama.cpp grammar enforcing JSON (any object, or valid against a JSON schema)."""
    if fmt is None or fmt.type == "text":
        return None
    from llama_cpp.llama_grammar import LlamaGrammar

    if fmt.type == "json_object" or not fmt.schema:
        schema: dict[str, Any] = {"type": "object"}
    else:
        schema = fmt.schema
    try:
        return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    except Exception as exc:  # noqa: BLE001 - the converter raises plain exceptions on bad schemas
        raise InvalidRequest(
            f"response_format.json_schema could not be turned into a grammar: {exc}",
            param="response_format",
        ) from exc
