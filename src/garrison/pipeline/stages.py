"""Stages: what every request passes before and after the engine, whatever surface it came from."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from garrison.domain import EmbeddingRequest, GenerationEvent, GenerationRequest
from garrison.security.principal import Principal as Caller

__all__ = ["Caller", "Stage", "run_after", "run_before", "run_before_embed"]


class Stage(Protocol):
    """One step around the engine (retrieval, redaction, screening, egress).

    `before` may rewrite the request (and add JSON-safe facts to `request.annotations`, which land in
    the audit record) or refuse it by raising a GarrisonError; `after` wraps the event stream. A stage
    that also guards embedding requests (guardrails, egress) has `before_embed(request, caller)`, the same
    for an EmbeddingRequest.
    """

    name: str

    async def before(self, request: GenerationRequest, caller: Caller) -> GenerationRequest: ...

    def after(
        self, request: GenerationRequest, caller: Caller, events: AsyncIterator[GenerationEvent]
    ) -> AsyncIterator[GenerationEvent]: ...


async def run_before(stages: Sequence[Stage], request: GenerationRequest, caller: Caller) -> GenerationRequest:
    """Every stage's `before`, in order."""
    for stage in stages:
        request = await stage.before(request, caller)
    return request


def run_after(
    stages: Sequence[Stage], request: GenerationRequest, caller: Caller, events: AsyncIterator[GenerationEvent]
) -> AsyncIterator[GenerationEvent]:
    """Wrap the engine's events in every stage's `after`, so the first stage sees the final events."""
    for stage in reversed(stages):
        events = stage.after(request, caller, events)
    return events


async def run_before_embed(stages: Sequence[Stage], request: EmbeddingRequest, caller: Caller) -> EmbeddingRequest:
    """Every stage's `before_embed`, in order (stages without one do not see embedding requests)."""
    for stage in stages:
        hook = getattr(stage, "before_embed", None)
        if hook is not None:
            request = await hook(request, caller)
    return request
