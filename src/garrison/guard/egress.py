"""Egress by data class: a request carrying data labelled above a model's trust never reaches that model.

Labels and trust levels share one order (public < internal < confidential < restricted). The check runs in
a stage's `before`, so a refused request is answered 403 before any engine or upstream sees a byte of it;
register this stage after every stage that can raise `request.data_label` (retrieval). Embedding requests
are checked the same way (`before_embed`): their label is the one the caller declared.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from garrison.domain import EmbeddingRequest, GenerationEvent, GenerationRequest
from garrison.errors import EgressDenied, InvalidRequest
from garrison.security.principal import CLEARANCES

LEVELS: tuple[str, ...] = CLEARANCES
DEFAULT_TRUST = "public"
"""The trust of a model whose settings name none: fail closed, it may receive public data only."""


def model_trust(model: Any) -> str:
    """A model's trust level (`trust` on its settings/ModelInfo), DEFAULT_TRUST when it declares none."""
    trust = getattr(model, "trust", None)
    return trust if isinstance(trust, str) and trust in LEVELS else DEFAULT_TRUST


def rank(level: str) -> int:
    """The position of a label in public < internal < confidential < restricted (400 when unknown)."""
    try:
        return LEVELS.index(level)
    except ValueError:
        raise InvalidRequest(
            f"unknown data label '{level}'; use one of {', '.join(LEVELS)}", param="data_label"
        ) from None


def highest(*labels: str | None) -> str | None:
    """The highest of some labels (None when none is set): what a request with all of them carries."""
    present = [label for label in labels if label is not None]
    return max(present, key=rank) if present else None


def check_egress(label: str | None, model: str, trust: str) -> None:
    """Raise EgressDenied (403 naming the label and the model) when `label` is above `trust`."""
    if label is not None and rank(label) > rank(trust):
        raise EgressDenied(label, model, trust)


class EgressStage:
    """The egress check as a pipeline stage (name 'egress'); `trust_of(model_id)` gives a model's trust."""

    name = "egress"

    def __init__(self, trust_of: Callable[[str], str]) -> None:
        self._trust_of = trust_of

    async def before(self, request: GenerationRequest, caller: Any) -> GenerationRequest:
        self._check(request)
        return request

    async def before_embed(self, request: EmbeddingRequest, caller: Any) -> EmbeddingRequest:
        self._check(request)
        return request

    def _check(self, request: GenerationRequest | EmbeddingRequest) -> None:
        label = request.data_label
        if label is None:
            return
        trust = self._trust_of(request.model)
        allowed = rank(label) <= rank(trust)
        request.annotations["egress"] = {"label": label, "trust": trust, "allowed": allowed}
        check_egress(label, request.model, trust)

    def after(
        self, request: GenerationRequest, caller: Any, events: AsyncIterator[GenerationEvent]
    ) -> AsyncIterator[GenerationEvent]:
        return events
