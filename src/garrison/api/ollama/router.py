"""Ollama-compatible routes under /api/: parse, authorize, call the service, translate. Nothing else."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from garrison.api.context import RequestContext, get_context
from garrison.api.deps import ServiceDep, authorize, visible_models
from garrison.api.errors import ollama_error_body
from garrison.api.ollama import translate
from garrison.api.ollama.schemas import (
    ChatRequest,
    EmbeddingsRequest,
    EmbedRequest,
    GenerateRequest,
    ShowRequest,
)
from garrison.api.streaming import ndjson, relay
from garrison.domain import EmbeddingRequest, EmbeddingResult, GenerationDone, GenerationRequest, TokenDelta
from garrison.errors import ContextLengthExceeded, GarrisonError, ModelNotFound, NotImplementedByServer
from garrison.registry import ModelInfo
from garrison.service import InferenceService

router = APIRouter(prefix="/api", tags=["ollama"])

T = TypeVar("T")
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


def _elapsed(ctx: RequestContext) -> int:
    return time.perf_counter_ns() - ctx.started_ns


async def _capped(call: Callable[[GenerationRequest], Awaitable[T]], gen: GenerationRequest) -> T:
    """Ollama's num_predict is a cap, not a reservation: past the context, generate until it is full."""
    try:
        return await call(gen)
    except ContextLengthExceeded as exc:
        if exc.param != "max_tokens" or gen.sampling.max_tokens is None:
            raise
        gen.sampling.max_tokens = None
        return await call(gen)


async def _generate(request: Request, service: InferenceService, gen: GenerationRequest, chat: bool,
                    stream: bool) -> Response:
    ctx = get_context(request)
    gen.request_id = ctx.request_id if ctx.request_id != "-" else gen.request_id
    ctx.model = gen.model
    ctx.prompt_text = "\n".join(m.content for m in gen.messages) if gen.messages is not None else gen.prompt
    estimate = (len(ctx.prompt_text or "") + len(gen.suffix or "")) // 3 + (gen.sampling.max_tokens or 256)
    await authorize(request, "chat" if chat else "completions", model=gen.model, estimated_tokens=estimate)
    _lookup(service, gen.model, "chat" if chat else "generate")
    if not stream:
        result = await _capped(service.complete, gen)
        ctx.prompt_tokens, ctx.completion_tokens = result.usage.prompt_tokens, result.usage.completion_tokens
        ctx.response_text = result.text
        whole = translate.to_ollama_chat if chat else translate.to_ollama_generate
        return JSONResponse(whole(result, _elapsed(ctx), time.time()))

    first, events = await _capped(service.start, gen)
    chunk = translate.chat_chunk if chat else translate.generate_chunk
    final = translate.chat_done if chat else translate.generate_done

    def on_delta(delta: TokenDelta) -> bytes | None:
        return ndjson(chunk(gen.model, delta.text, time.time())) if delta.text else None

    def on_done(done: GenerationDone) -> list[bytes]:
        return [ndjson(final(gen.model, done, _elapsed(ctx), time.time()))]

    def on_error(exc: GarrisonError) -> list[bytes]:
        return [ndjson(ollama_error_body(exc))]

    frames = relay(first, events, ctx, on_delta, on_done, on_error)
    return StreamingResponse(frames, media_type="application/x-ndjson", headers={"Cache-Control": "no-cache"})


async def _load(request: Request, service: InferenceService, name: str, chat: bool) -> JSONResponse:
    """Ollama's 'load the model' call: every garrison model is loaded at start, so answer done at once."""
    get_context(request).model = name
    await authorize(request, "chat" if chat else "completions", model=name)
    _lookup(service, name, "chat" if chat else "generate")
    return JSONResponse(translate.load_response(name, time.time(), chat))


@router.post("/generate")
async def generate(body: GenerateRequest, request: Request, service: ServiceDep) -> Response:
    name = translate.resolve_model(body.model, service.registry.ids())
    if translate.is_load(body):
        return await _load(request, service, name, chat=False)
    gen = translate.from_ollama_generate(body, name)
    return await _generate(request, service, gen, False, body.streaming)


@router.post("/chat")
async def chat(body: ChatRequest, request: Request, service: ServiceDep) -> Response:
    name = translate.resolve_model(body.model, service.registry.ids())
    if translate.is_load(body):
        return await _load(request, service, name, chat=True)
    gen = translate.from_ollama_chat(body, name)
    return await _generate(request, service, gen, True, body.streaming)


async def _embed(request: Request, service: InferenceService, emb: EmbeddingRequest) -> EmbeddingResult:
    ctx = get_context(request)
    ctx.model = emb.model
    estimate = sum(len(t) for t in emb.inputs) // 3
    await authorize(request, "embeddings", model=emb.model, estimated_tokens=estimate)
    _lookup(service, emb.model, "embeddings")
    if not emb.inputs:
        return EmbeddingResult(model=emb.model, vectors=[], prompt_tokens=0)
    result = await service.embed(emb)
    ctx.prompt_tokens = result.prompt_tokens
    return result


@router.post("/embed")
async def embed(body: EmbedRequest, request: Request, service: ServiceDep) -> JSONResponse:
    emb = translate.from_ollama_embed(body, translate.resolve_model(body.model, service.registry.ids()))
    result = await _embed(request, service, emb)
    return JSONResponse(translate.to_ollama_embed(result, _elapsed(get_context(request)), body.dimensions))


@router.post("/embeddings")
async def embeddings(body: EmbeddingsRequest, request: Request, service: ServiceDep) -> JSONResponse:
    emb = translate.from_ollama_embeddings(body, translate.resolve_model(body.model, service.registry.ids()))
    return JSONResponse(translate.to_ollama_embeddings(await _embed(request, service, emb)))


@router.get("/version")
async def version(request: Request) -> JSONResponse:
    await authorize(request, None)  # listing routes: any valid key, no particular scope
    return JSONResponse(translate.to_ollama_version())


@router.get("/tags")
async def tags(request: Request, service: ServiceDep) -> JSONResponse:
    visible = await visible_models(request, service.registry)
    models = [translate.to_ollama_tag(m, m.path.stat().st_mtime) for m in visible]
    return JSONResponse({"models": models})


@router.get("/ps")
async def ps(request: Request, service: ServiceDep) -> JSONResponse:
    visible = await visible_models(request, service.registry)
    models = [translate.to_ollama_ps(m, m.path.stat().st_mtime) for m in visible]
    return JSONResponse({"models": models})


@router.post("/show")
async def show(body: ShowRequest, request: Request, service: ServiceDep) -> JSONResponse:
    name = translate.resolve_model(body.model_name, service.registry.ids())
    await authorize(request, None, model=name)
    info = _lookup(service, name)
    return JSONResponse(translate.to_ollama_show(info, info.path.stat().st_mtime))


_NO_DOWNLOADS = (
    "garrison never downloads or builds models: copy the GGUF file to the server and register it with "
    "`garrison models add <id> <file.gguf>` (its sha256 is pinned), then restart `garrison serve`"
)


@router.post("/pull")
@router.post("/push")
@router.post("/create")
@router.post("/blobs/{digest}")
@router.head("/blobs/{digest}")
async def model_transfer(request: Request) -> Response:
    """Routes that would move models over the internet: 501, pointing at `garrison models add`."""
    await authorize(request, None)
    raise NotImplementedByServer(f"{request.url.path} is not supported: {_NO_DOWNLOADS}")


@router.post("/copy")
@router.delete("/delete")
async def model_edit(request: Request) -> Response:
    """Served models come from garrison.toml, so they are not copied or deleted over the API."""
    await authorize(request, None)
    raise NotImplementedByServer(
        f"{request.url.path} is not supported: garrison serves the models listed in garrison.toml; edit it "
        "(models are added with `garrison models add`) and restart `garrison serve`"
    )
