"""GET /health: the one deliberately public route; reports the models, their load and their upstreams."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from garrison import __version__
from garrison.api.deps import ServiceDep
from garrison.service import InferenceService

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(service: ServiceDep) -> JSONResponse:
    load = service.load_state()
    upstreams = service.upstreams()
    models, problems = [], []
    for m in service.registry:
        entry = {"id": m.id, "kind": m.kind, "engine": m.engine, "quantization": m.quantization,
                 "context_length": m.context_length, **load.get(m.id, {}),
                 **({"upstream": upstreams[m.id]} if m.id in upstreams else {})}
        failure = _failure(service, m.id)
        if failure:
            entry["error"] = failure
            problems.append(f"{m.id}: {failure}")
        models.append(entry)
    security = service.ledger.security
    backends = await asyncio.to_thread(security.health) if security is not None else {}
    degraded = any(b.get("state") != "ok" for b in backends.values())
    body = {"status": "unavailable" if problems else "degraded" if degraded else "ok", "version": __version__,
            "models": models, **({"backends": backends} if backends else {})}
    if problems:
        body["reason"] = "; ".join(problems)
    return JSONResponse(body, status_code=503 if problems else 200)


def _failure(service: InferenceService, model_id: str) -> str | None:
    """Why a model's engine cannot serve (engines that report it: the llama engine's decode loop)."""
    try:
        engine = service.engine(model_id)
    except KeyError:
        return None
    check = getattr(engine, "failure", None)
    return check() if callable(check) else None
