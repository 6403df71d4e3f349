"""Ollama-compatible routes under /api/: translate the body, hand it to the pipeline with a framer."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from garrison.api.deps import GenerationDep, ServiceDep, authorize, visible_models
from garrison.api.ollama import translate
from garrison.api.ollama.framer import OllamaFramer
from garrison.api.ollama.schemas import ChatRequest, EmbeddingsRequest, EmbedRequest, GenerateRequest, ShowRequest
from garrison.domain import EmbeddingRequest, EmbeddingResult
from garrison.errors import ModelNotFound, NotImplementedByServer
from garrison.registry import ModelInfo
from garrison.service import InferenceService

# Ollama reads a body as JSON whatever its Content-Type says; some clients (LiteLLM) send none.
router = APIRouter(prefix="/api", tags=["ollama"], strict_content_type=False)

Action = Literal["generate", "chat", "embeddings"]


def _lookup(service: InferenceService, name: str, action: Action | None = None) -> ModelInfo:
    """The model by name: Ollama's 404 wording when absent, 400 when it cannot do `action`."""
    try:
        info = service.model(name)
    except ModelNotFound:
        raise translate.model_not_found(name) from None
    if action is not None and info.kind != ("embed" if action == "embeddings" else "generate"):
        raise translate.unsupported(name, action)
    return info


async def _generate(body: GenerateRequest | ChatRequest, request: Request, generation: GenerationDep) -> Response:
    chat = isinstance(body, ChatRequest)
    service = generation.service
    name = translate.resolve_model(body.model, service.registry.ids())
    _lookup(service, name, "chat" if chat else "generate")
    if translate.is_load(body):  # every model is loaded at start: answer done at once
        await authorize(request, "chat" if chat else "completions", model=name)
        return JSONResponse(translate.load_response(name, time.time(), chat))
    if isinstance(body, ChatRequest):
        gen = translate.from_ollama_chat(body, name)
    else:
        gen = translate.from_ollama_generate(body, name)
    framer = OllamaFramer(gen.model, chat=chat, started_ns=generation.origin.started_ns)
    return await generation.respond(gen, framer, stream=body.streaming)


@router.post("/generate")
async def generate(body: GenerateRequest, request: Request, generation: GenerationDep) -> Response:
    return await _generate(body, request, generation)


@router.post("/chat")
async def chat(body: ChatRequest, request: Request, generation: GenerationDep) -> Response:
    return await _generate(body, request, generation)


async def _embed(request: Request, generation: GenerationDep, emb: EmbeddingRequest) -> EmbeddingResult:
    _lookup(generation.service, emb.model, "embeddings")
    if not emb.inputs:  # Ollama's "load the embedding model" call
        await authorize(request, "embeddings", model=emb.model)
        return EmbeddingResult(model=emb.model, vectors=[], prompt_tokens=0)
    return await generation.embed(emb)


@router.post("/embed")
async def embed(body: EmbedRequest, request: Request, generation: GenerationDep) -> JSONResponse:
    emb = translate.from_ollama_embed(body, translate.resolve_model(body.model, generation.service.registry.ids()))
    result = await _embed(request, generation, emb)
    elapsed = time.perf_counter_ns() - generation.origin.started_ns
    return JSONResponse(translate.to_ollama_embed(result, elapsed, body.dimensions))


@router.post("/embeddings")
async def embeddings(body: EmbeddingsRequest, request: Request, generation: GenerationDep) -> JSONResponse:
    emb = translate.from_ollama_embeddings(body, translate.resolve_model(body.model, generation.service.registry.ids()))
    return JSONResponse(translate.to_ollama_embeddings(await _embed(request, generation, emb)))


@router.get("/version")
async def version(request: Request) -> JSONResponse:
    await authorize(request, None)  # listing routes: any valid key, no particular scope
    return JSONResponse(translate.to_ollama_version())


@router.get("/tags")
async def tags(request: Request, service: ServiceDep) -> JSONResponse:
    visible = await visible_models(request, service.registry)
    return JSONResponse({"models": [translate.to_ollama_tag(m, m.modified) for m in visible]})


@router.get("/ps")
async def ps(request: Request, service: ServiceDep) -> JSONResponse:
    visible = await visible_models(request, service.registry)
    return JSONResponse({"models": [translate.to_ollama_ps(m, m.modified) for m in visible]})


@router.post("/show")
async def show(body: ShowRequest, request: Request, service: ServiceDep) -> JSONResponse:
    name = translate.resolve_model(body.model_name, service.registry.ids())
    await authorize(request, None, model=name)
    info = _lookup(service, name)
    return JSONResponse(translate.to_ollama_show(info, info.modified))


_NO_DOWNLOADS = (
    "garrison never downloads or builds models: copy the GGUF file to the server and register it with "
    "`garrison models add <id> <file.gguf>` (its sha256 is pinned), then restart `garrison serve`"
)


@router.post("/pull")
@router.post("/push")
@router.post("/create")
async def model_transfer(request: Request) -> Response:
    """Routes that would move models over the internet: 501, pointing at `garrison models add`."""
    await authorize(request, None)
    raise NotImplementedByServer(f"{request.url.path} is not supported: {_NO_DOWNLOADS}")


@router.post("/blobs/{digest}")
@router.head("/blobs/{digest}")
async def model_blob(request: Request, digest: str) -> Response:
    """Blob uploads for /api/create (the path names its parameter, so the OpenAPI document is valid): 501."""
    return await model_transfer(request)


@router.post("/copy")
@router.delete("/delete")
async def model_edit(request: Request) -> Response:
    """Served models come from garrison.toml, so they are not copied or deleted over the API."""
    await authorize(request, None)
    raise NotImplementedByServer(
        f"{request.url.path} is not supported: garrison serves the models listed in garrison.toml; edit it "
        "(models are added with `garrison models add`) and restart `garrison serve`"
    )
