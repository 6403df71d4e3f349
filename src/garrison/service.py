"""InferenceService: the one generation pipeline every surface calls, with the caller's identity.

A request walks: stages' `before` -> model lookup -> authorization (scope, model, clearance) -> admission
(capacity, quotas, a durable `request.admitted` record) -> engine -> stages' `after` -> settlement and the
`request.finished` record, written from the domain result however the request ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, assert_never, cast

import anyio

from garrison.domain import (
    Citations,
    Completion,
    EmbeddingRequest,
    EmbeddingResult,
    GenerationDone,
    GenerationEvent,
    GenerationRequest,
    GenerationStarted,
    Timings,
    TokenDelta,
    ToolCallEvent,
    Usage,
    collect,
)
from garrison.engines.base import Embedder, Engine, EngineRegistry, default_engines
from garrison.errors import ContextLengthExceeded, EngineError, GarrisonError, InvalidRequest, Overloaded
from garrison.guard.egress import model_trust
from garrison.guard.stage import guard_stages
from garrison.pipeline.ledger import Ledger, Origin, Outcome, Ticket, estimate_prompt_tokens
from garrison.pipeline.offload import Offload
from garrison.pipeline.stages import Caller, Stage, run_after, run_before, run_before_embed
from garrison.registry import Kind, ModelInfo, ModelRegistry, build_registry
from garrison.settings import Settings

if TYPE_CHECKING:
    from garrison.security import Security

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Admission:
    """How many requests a model holds (running or waiting) against its limit."""

    limit: int
    in_flight: int = 0


class InferenceService:
    """The one entry point surfaces use for generation and embeddings, whatever the surface."""

    def __init__(
        self,
        registry: ModelRegistry,
        engines: dict[str, Engine | Embedder],
        settings: Settings,
        *,
        security: Security | None = None,
        stages: Sequence[Stage] = (),
    ) -> None:
        self.registry = registry
        self._engines = engines
        limit = settings.engine.max_concurrent_sequences + settings.engine.max_queue
        self._admission = {model_id: _Admission(limit) for model_id in engines}
        self.ledger = Ledger(security)
        self.stages: list[Stage] = list(stages)
        self.offload = Offload()  # the ledger's store work, off the event loop
        # what each model's engine implements (a runtime Protocol check walks its attributes: not per request)
        self._kinds: dict[str, tuple[Engine | Embedder, bool, bool]] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, engines: EngineRegistry | None = None, *, security: Security | None = None
    ) -> InferenceService:
        """Load every configured model (digests checked) and build each engine through its factory."""
        engines = engines or default_engines()
        registry = build_registry(settings, engines)
        by_engine: dict[str, list[ModelInfo]] = {}
        for info in registry:
            by_engine.setdefault(info.engine, []).append(info)
        built: dict[str, Engine | Embedder] = {}
        for name, models in by_engine.items():
            built.update(engines.factory(name)(models, settings))
        stages = guard_stages(settings, lambda model_id: model_trust(registry.get(model_id)))
        return cls(registry, built, settings, security=security, stages=stages)

    def abort(self, error: GarrisonError) -> None:
        """Fail every running and queued generation now, each with `error` (a shutdown's drain bound passed)."""
        for engine in self._engines.values():
            abort = getattr(engine, "abort", None)
            if abort is not None:
                abort(error)

    def attach_security(self, security: Security | None) -> None:
        """Check keys, quotas and audit against `security` (None: everything allowed, nothing recorded)."""
        self.ledger = Ledger(security)

    def anonymous(self) -> Caller:
        """The caller of a request when auth is disabled."""
        return self.ledger.anonymous()

    def model(self, model_id: str, kind: Kind | None = None) -> ModelInfo:
        return self.registry.get(model_id, kind)

    def engine(self, model_id: str) -> Engine | Embedder:
        return self._engines[model_id]

    def _kind(self, model_id: str) -> tuple[Engine | Embedder, bool, bool]:
        """A model's engine, whether it generates and whether it embeds (checked once per engine object)."""
        engine = self._engines[model_id]
        known = self._kinds.get(model_id)
        if known is None or known[0] is not engine:
            known = self._kinds[model_id] = (engine, isinstance(engine, Engine), isinstance(engine, Embedder))
        return known

    def load_state(self) -> dict[str, dict[str, int]]:
        """Running-or-waiting requests per model, for health and metrics."""
        return {k: {"in_flight": a.in_flight, "limit": a.limit} for k, a in self._admission.items()}

    def engine_metrics(self) -> dict[str, dict[str, int]]:
        """Scheduler metrics of every engine that reports them (running, waiting, tokens, KV, prefix hits)."""
        out: dict[str, dict[str, int]] = {}
        for model_id, engine in self._engines.items():
            metrics = getattr(engine, "metrics", None)
            if callable(metrics):
                out[model_id] = metrics()
        return out

    async def startup(self) -> None:
        """Start what engines run in the background (an upstream's health checks), once the loop runs."""
        for engine in self._engines.values():
            start = getattr(engine, "start", None)
            if callable(start):
                await start()

    def upstreams(self) -> dict[str, dict[str, Any]]:
        """The replica states of every remote model, for /health (no failure reasons: /health is public)."""
        from garrison.engines.upstream.models import upstream_of

        return {model_id: state for model_id, engine in self._engines.items()
                if (state := upstream_of(engine, public=True)) is not None}

    async def aclose(self) -> None:
        """Close every engine (at shutdown), each shielded from cancellation; let the store threads go."""
        self.offload.close()
        for model_id, engine in self._engines.items():
            with anyio.CancelScope(shield=True):
                try:
                    await engine.aclose()
                except Exception:  # noqa: BLE001 - one engine's failure must not keep the others open
                    log.exception("closing the engine of %s failed", model_id)

    @contextlib.contextmanager
    def _admit(self, model_id: str) -> Iterator[None]:
        admission = self._admission[model_id]
        if admission.in_flight >= admission.limit:
            raise Overloaded(
                f"model '{model_id}' is at capacity ({admission.limit} requests running or queued); "
                "retry shortly",
                retry_after=1.0,
            )
        admission.in_flight += 1
        try:
            yield
        finally:
            admission.in_flight -= 1

    async def stream(
        self, request: GenerationRequest, caller: Caller | None = None, origin: Origin | None = None
    ) -> AsyncIterator[GenerationEvent]:
        """Generate, yielding events that end with one GenerationDone; closing it early cancels the generation.

        The GenerationDone is yielded only once the request's usage and `request.finished` record are
        durable; when they cannot be written the stream raises AuditWriteError instead.
        """
        caller = caller or self.anonymous()
        origin = origin or Origin(request.request_id)
        request.request_id = origin.request_id
        ledger = self.ledger
        with contextlib.ExitStack() as held:
            try:
                ledger.authorize(caller, request.scope, request.model)
                ledger.clear(caller, request.data_label)  # the label the caller declared, before any stage
                request = await run_before(self.stages, request, caller)
                ledger.clear(caller, request.data_label)
                info = self.model(request.model, "generate")
                found, generates, _ = self._kind(info.id)
                if not generates:
                    raise EngineError(f"model '{info.id}' has no generation engine")
                engine = cast(Engine, found)
                held.enter_context(self._admit(info.id))
                asked = request.sampling.max_tokens
                estimate = estimate_prompt_tokens(request)  # once: the stages are done with the prompt
                room = max(1, info.context_length - estimate)
                completion = asked if asked is not None else room  # no max_tokens: up to the context
                ticket = await self.offload.run(
                    lambda: ledger.admit(
                        origin, caller, info.id, request, completion, open_ended=asked is None, estimate=estimate
                    )
                )
                ticket.asked = asked
            except GarrisonError as exc:
                if origin.records == 0:
                    await self.offload.run(ledger.refuse, origin, caller, request.model, request, exc)
                raise
            run = self._run(engine, request, caller, ticket, estimate)
            try:
                async for event in run:
                    yield event
            finally:
                await aclose_shielded(run)

    async def _run(
        self, engine: Engine, request: GenerationRequest, caller: Caller, ticket: Ticket, estimate: int
    ) -> AsyncIterator[GenerationEvent]:
        """An admitted generation: engine and stages, metered, settled and recorded however it ends."""
        # the engine sees who it works for, and what it notes (an upstream's request id) joins the records
        shaped = dataclasses.replace(
            _within_limit(request, ticket.limit, estimate), on_behalf_of=caller, annotations=ticket.annotations
        )
        meter = _Meter(estimate, shaped.sampling.max_tokens)
        inner = _engine_events(engine, shaped)
        context = self.model(request.model).context_length
        events = run_after(self.stages, request, caller, meter.watch(inner, ticket, self.ledger, context, self.offload))
        failure: BaseException | None = None
        try:
            async for event in events:
                meter.seen(event)
                if isinstance(event, GenerationDone):
                    outcome = meter.outcome(ticket.origin, None)
                    await self.offload.run(self.ledger.finish, ticket, outcome)
                    yield event
                    return
                yield event
            raise EngineError("the engine ended without a result")
        except BaseException as exc:
            failure = exc
            raise
        finally:
            await aclose_shielded(events, inner)
            if not ticket.finished:
                with anyio.CancelScope(shield=True):
                    try:
                        outcome = meter.outcome(ticket.origin, failure)
                        await self.offload.run(self.ledger.finish, ticket, outcome)
                    except Exception as exc:  # noqa: BLE001 - the request already failed or its client left
                        log.error("request %s: its end could not be recorded: %s", ticket.origin.request_id, exc)

    async def start(
        self, request: GenerationRequest, caller: Caller | None = None, origin: Origin | None = None
    ) -> tuple[GenerationEvent, AsyncIterator[GenerationEvent]]:
        """Begin a generation and wait for its first event, so request errors surface before streaming."""
        events = self.stream(request, caller, origin)
        try:
            first = await anext(events)
        except BaseException:
            await aclose_shielded(events)
            raise
        return first, events

    async def complete(
        self, request: GenerationRequest, caller: Caller | None = None, origin: Origin | None = None
    ) -> Completion:
        """Generate to the end and return the whole result (every choice's text, tool calls, logprobs)."""
        request.stream = False  # the caller takes it whole: an engine may fetch it in one piece
        seen: list[GenerationEvent] = []
        events = self.stream(request, caller, origin)
        try:
            async for event in events:
                seen.append(event)
        finally:
            await aclose_shielded(events)
        if not any(isinstance(event, GenerationDone) for event in seen):
            raise EngineError("the engine ended without a result")
        return collect(request, seen)

    async def embed(
        self, request: EmbeddingRequest, caller: Caller | None = None, origin: Origin | None = None
    ) -> EmbeddingResult:
        """Embed texts for `caller`: authorized, admitted, settled and recorded like a generation."""
        caller = caller or self.anonymous()
        origin = origin or Origin(request.request_id)
        request.request_id = origin.request_id
        ledger = self.ledger
        with contextlib.ExitStack() as held:
            try:
                ledger.authorize(caller, "embeddings", request.model)
                ledger.clear(caller, request.data_label)
                request = await run_before_embed(self.stages, request, caller)  # guardrails, egress
                info = self.model(request.model, "embed")
                found, _, embeds = self._kind(info.id)
                if not embeds:
                    raise EngineError(f"model '{info.id}' has no embedding engine")
                embedder = cast(Embedder, found)
                if not request.inputs:
                    raise InvalidRequest("'input' must not be empty", param="input")
                held.enter_context(self._admit(info.id))
                ticket = await self.offload.run(ledger.admit, origin, caller, info.id, request, 0)
            except GarrisonError as exc:
                if origin.records == 0:
                    await self.offload.run(ledger.refuse, origin, caller, request.model, request, exc)
                raise
            outcome = Outcome(0, 0, status=500, reason="the embedder did not finish")
            try:
                request.on_behalf_of, request.annotations = caller, ticket.annotations
                result = await embedder.embed(request)
                outcome = Outcome(result.prompt_tokens, 0)
            except GarrisonError as exc:
                outcome = Outcome(0, 0, status=exc.status, error=exc, reason=exc.message)
                raise
            finally:
                with anyio.CancelScope(shield=True):
                    await self.offload.run(ledger.finish, ticket, outcome)
            return result


def _within_limit(request: GenerationRequest, limit: int | None, estimate: int) -> GenerationRequest:
    """The request as the engine gets it: max_tokens no larger than the key's limits leave room for."""
    if limit is None:
        return request
    room = max(1, limit - estimate)
    asked = request.sampling.max_tokens
    if asked is not None and asked <= room:
        return request
    sampling = dataclasses.replace(request.sampling, max_tokens=room, max_tokens_is_cap=True)
    return dataclasses.replace(request, sampling=sampling)


async def _engine_events(engine: Engine, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
    """The engine's events; a max_tokens that is only a cap (Ollama's num_predict, a quota's room) and
    overflows the context means 'until the context is full', not an error."""
    events = engine.generate(request)
    try:
        try:
            first = await anext(events, None)
        except ContextLengthExceeded as exc:
            sampling = request.sampling
            if exc.param != "max_tokens" or not sampling.max_tokens_is_cap or sampling.max_tokens is None:
                raise
            await aclose_shielded(events)
            request = dataclasses.replace(request, sampling=dataclasses.replace(sampling, max_tokens=None))
            events = engine.generate(request)
            first = await anext(events, None)
        if first is None:
            return
        yield first
        async for event in events:
            yield event
    finally:
        await aclose_shielded(events)


async def aclose_shielded(*generators: AsyncIterator[Any]) -> None:
    """Close async generators, shielded from cancellation (their `finally` blocks settle and record); one that
    already ran to its end (a native generator without a frame) needs nothing, and costs no cancel scope."""
    open_ = [g for g in generators if getattr(g, "ag_frame", True) is not None]
    if not open_:
        return
    with anyio.CancelScope(shield=True):
        for generator in open_:
            await generator.aclose()  # type: ignore[attr-defined]


class _Meter:
    """Counts what a generation actually prompted and generated, and stops it at its key's limit."""

    def __init__(self, estimate: int, engine_max_tokens: int | None) -> None:
        self.estimate = estimate
        self.engine_max_tokens = engine_max_tokens  # what the engine itself stops at
        self.limit: int | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens = 0
        self.done: GenerationDone | None = None
        self.parts: list[str] = []
        self.delivered = False  # an event reached the consumer (a stream's HTTP status is then 200)

    async def watch(
        self, events: AsyncIterator[GenerationEvent], ticket: Ticket, ledger: Ledger, context: int, offload: Offload
    ) -> AsyncIterator[GenerationEvent]:
        """The engine's events, counted. Once the engine counts the prompt the grant grows to fit it where
        the key's limits allow; a prompt that does not fit is refused before any decode work, and a
        generation that reaches the limit ends with finish_reason 'length'."""
        self.limit = ticket.limit
        async for event in events:
            match event:
                case GenerationStarted():
                    self.prompt_tokens = event.prompt_tokens
                    if self.limit is not None:
                        asked = ticket.asked if ticket.asked is not None else max(1, context - event.prompt_tokens)
                        want = event.prompt_tokens + asked
                        self.limit = await offload.run(ledger.extend, ticket, want)
                        if self.limit is not None and event.prompt_tokens >= self.limit:
                            self.prompt_tokens = 0  # refused before any prompt processing: nothing to charge
                            raise ticket.over_limit(event.prompt_tokens, ledger.now())
                case TokenDelta():
                    self.completion_tokens += event.tokens
                case GenerationDone():
                    self.done = event
                case ToolCallEvent() | Citations():
                    pass
                case _:
                    assert_never(event)
            yield event
            if isinstance(event, TokenDelta) and self._at_limit():
                self.done = GenerationDone("length", self.usage())
                yield self.done
                return

    def _at_limit(self) -> bool:
        """The limit is reached, and the engine would not stop there by itself."""
        if self.limit is None or self._prompt() + self.completion_tokens < self.limit:
            return False
        return self.engine_max_tokens is None or self._prompt() + self.engine_max_tokens > self.limit

    def seen(self, event: GenerationEvent) -> None:
        """An event on its way to the consumer (after the stages)."""
        self.delivered = True
        match event:
            case TokenDelta():
                self.parts.append(event.text)
            case ToolCallEvent():  # the audit record keeps what was answered, calls included
                self.parts.append(json.dumps({"tool_call": {"name": event.call.name,
                                                            "arguments": event.call.arguments}}))
            case GenerationStarted() | Citations() | GenerationDone():
                pass
            case _:
                assert_never(event)

    def _prompt(self) -> int:
        if self.prompt_tokens is not None:
            return self.prompt_tokens
        return self.done.usage.prompt_tokens if self.done is not None else self.estimate

    def usage(self) -> Usage:
        if self.done is not None:
            return self.done.usage
        return Usage(prompt_tokens=self._prompt(), completion_tokens=self.completion_tokens)

    def outcome(self, origin: Origin, failure: BaseException | None) -> Outcome:
        """How the request ended, with the tokens it actually used."""
        usage = self.usage()
        text = "".join(self.parts)
        if failure is None and self.done is not None:
            return Outcome(usage.prompt_tokens, usage.completion_tokens, finish_reason=self.done.finish_reason,
                           response_text=text)
        streamed = origin.streaming and self.delivered
        if isinstance(failure, GarrisonError):
            return Outcome(usage.prompt_tokens, usage.completion_tokens, status=200 if streamed else failure.status,
                           error=failure, reason=failure.message, response_text=text)
        if failure is None or isinstance(failure, GeneratorExit | anyio.get_cancelled_exc_class()):
            return Outcome(usage.prompt_tokens, usage.completion_tokens, status=200 if streamed else 499,
                           reason="the client went away before the end", finish_reason="cancelled",
                           response_text=text)
        return Outcome(usage.prompt_tokens, usage.completion_tokens, status=200 if streamed else 500,
                       reason=f"unhandled {type(failure).__name__}", response_text=text)


__all__ = ["InferenceService", "Origin", "Timings", "Usage"]
