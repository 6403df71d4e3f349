"""GET /health: the one deliberately public route; reports the models, their load and their upstreams."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from garrison import __version__
from garrison.api.deps import ServiceDep

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(service: ServiceDep) -> JSONResponse:
    load = service.load_state()
    upstreams = service.upstreams()
    models = [
        {"id": m.id, "kind": m.kind, "engine": m.engine, "quantization": m.quantization,
         "context_length": m.context_length, **load.get(m.id, {}),
         **({"upstream": upstreams[m.id]} if m.id in upstreams else {})}
        for m in service.registry
    ]
    security = service.ledger.security
    backends = await asyncio.to_thread(security.health) if security is not None else {}
    status = "degraded" if any(b.get("state") != "ok" for b in backends.values()) else "ok"
    return JSONResponse({"status": status, "version": __version__, "models": models,
                         **({"backends": backends} if backends else {})})
