"""Knowledge models and the server's documents: open the library, list [[knowledge]], add the stage."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from garrison.documents.library import Library
from garrison.documents.stage import RetrievalStage
from garrison.errors import ConfigError, ModelNotFound
from garrison.guard.egress import EgressStage
from garrison.guard.stage import GuardStage
from garrison.registry import ModelInfo, ModelRegistry
from garrison.service import InferenceService
from garrison.settings import EMBEDDING_MODEL_ID, KnowledgeModel, Settings
from garrison.store import Store

ENGINE = "knowledge"  # a knowledge model has no engine of its own: the stage hands it to its chat model


def knowledge_models(registry: ModelRegistry, specs: Sequence[KnowledgeModel]) -> list[ModelInfo]:
    """Listing entries for the knowledge models: their chat model's facts under their own id."""
    infos = []
    for spec in specs:
        try:
            base = registry.get(spec.model, "generate")
        except ModelNotFound:
            raise ConfigError(
                f"knowledge model '{spec.id}' answers with '{spec.model}', which is not a served chat model"
            ) from None
        meta = {**base.metadata, "knowledge": {"model": spec.model, "collections": list(spec.collections),
                                               "k": spec.k}}
        infos.append(dataclasses.replace(base, id=spec.id, engine=ENGINE, metadata=meta))
    return infos


def attach_documents(settings: Settings, service: InferenceService, store: Store | None = None) -> Library | None:
    """Open the documents library (when roots are configured) and put retrieval into the pipeline.

    `store` is the server's store (the catalogue lives there); None opens the configured one.

    The stage is added even without roots, so a request asking for documents is refused, never ignored.
    Order: guard (input), retrieval (its chunks screened by the guard's `retrieved` rules), egress.
    """
    if settings.knowledge and not settings.documents.roots:
        raise ConfigError("[[knowledge]] models need document roots: add [[documents.roots]]")
    library = Library.open(settings, embed=_served_embedder(service), store=store) if settings.documents.roots else None
    try:
        screen = next((s.screen_retrieved for s in service.stages if isinstance(s, GuardStage)), None)
        stage = RetrievalStage(library, settings.knowledge, screen)
        for info in knowledge_models(service.registry, settings.knowledge):
            service.registry.add(info)
    except BaseException:
        if library is not None:
            library.close()
        raise
    # after the guard's input screening (so its state exists for screen_retrieved), before egress, which
    # must see the data label retrieval sets
    egress = next((i for i, s in enumerate(service.stages) if isinstance(s, EgressStage)), len(service.stages))
    service.stages.insert(egress, stage)
    return library


def _served_embedder(service: InferenceService):
    """The embedding model the server already loaded (None: the library loads its own)."""
    from garrison.engines.embeddings import OnnxEmbedder

    if EMBEDDING_MODEL_ID not in service.registry.ids("embed"):
        return None
    engine = service.engine(EMBEDDING_MODEL_ID)
    return engine.vectors if isinstance(engine, OnnxEmbedder) else None
