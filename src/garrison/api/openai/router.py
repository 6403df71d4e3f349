"""OpenAI-compatible routes: parse, authorize, call the service, translate. Nothing else."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from garrison.api.context import get_context
from garrison.api.deps import ServiceDep, authorize, visible_models
from garrison.api.errors import openai_error_body
from garrison.api.openai import translate
from garrison.api.openai.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingsRequest
from garrison.api.streaming import relay, sse
from garrison.domain import GenerationDone, GenerationRequest, TokenDelta
from garrison.errors import GarrisonError

router = APIRouter(prefix="/v1", tags=["openai"])


def _estimate(request: GenerationRequest) -> int:
    """A cheap upper-ish bound on the tokens a request will use, for quota admission."""
    text = "".join(m.content for m in request.messages or []) + (request.prompt or "") + (request.suffix or "")
    return len(text) // 3 + (request.sampling.max_tokens or 256)


async def _generate(request: Request, service: ServiceDep, gen: GenerationRequest, scope: str, chat: bool,
                    include_usage: bool, stream: bool):  # type: ignore[no-untyped-def]
    ctx = get_context(request)
    gen.request_id = ctx.request_id if ctx.request_id != "-" else gen.request_id
    ctx.model = gen.model
    ctx.prompt_text = "\n".join(m.content for m in gen.messages) if gen.messages else gen.prompt
    await authorize(request, scope, model=gen.model, estimated_tokens=_estimate(gen))
    service.model(gen.model, "generate")
    if not stream:
        result = await service.complete(gen)
        ctx.prompt_tokens, ctx.completion_tokens = result.usage.prompt_tokens, result.usage.completion_tokens
        ctx.response_text = result.text
        return JSONResponse(translate.to_openai_chat(result) if chat else translate.to_openai_completion(result))

    first, events = await service.start(gen)

    def on_delta(delta: TokenDelta) -> bytes | None:
        if not delta.text:
            return None
        if chat:
            return sse(translate.chat_chunk(gen, {"content": delta.text}))
        return sse(translate.completion_chunk(gen, delta.text))

    def on_done(done: GenerationDone) -> list[bytes]:
        finish = "length" if done.finish_reason == "length" else "stop"
        frames = [sse(translate.chat_chunk(gen, {}, finish) if chat else translate.completion_chunk(gen, "", finish))]
        if include_usage:
            frames.append(sse(translate.usage_chunk(gen, done, chat)))
        return [*frames, sse("[DONE]")]

    def on_error(exc: GarrisonError) -> list[bytes]:
        return [sse(openai_error_body(exc)), sse("[DONE]")]

    head = [sse(translate.chat_chunk(gen, {"role": "assistant", "content": ""}))] if chat else []

    async def body():  # type: ignore[no-untyped-def]
        for frame in head:
            yield frame
        async for frame in relay(first, events, ctx, on_delta, on_done, on_error):
            yield frame

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request, service: ServiceDep):  # type: ignore[no-untyped-def]
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return await _generate(request, service, translate.from_openai_chat(body), "chat", True, include_usage, body.stream)


@router.post("/completions")
async def completions(body: CompletionRequest, request: Request, service: ServiceDep):  # type: ignore[no-untyped-def]
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    gen = translate.from_openai_completion(body)
    return await _generate(request, service, gen, "completions", False, include_usage, body.stream)


@router.post("/embeddings")
async def embeddings(body: EmbeddingsRequest, request: Request, service: ServiceDep) -> JSONResponse:
    ctx = get_context(request)
    emb = translate.from_openai_embeddings(body)
    ctx.model = emb.model
    await authorize(request, "embeddings", model=emb.model, estimated_tokens=sum(len(t) for t in emb.inputs) // 3)
    result = await service.embed(emb)
    ctx.prompt_tokens = result.prompt_tokens
    return JSONResponse(translate.to_openai_embeddings(result, body.encoding_format))


@router.get("/models")
async def list_models(request: Request, service: ServiceDep) -> JSONResponse:
    models = await visible_models(request, service.registry)
    data = [translate.to_openai_model(m.id, m.path.stat().st_mtime) for m in models]
    return JSONResponse({"object": "list", "data": data})


@router.get("/models/{model_id}")
async def get_model(model_id: str, request: Request, service: ServiceDep) -> JSONResponse:
    await authorize(request, None, model=model_id)
    info = service.model(model_id)
    return JSONResponse(translate.to_openai_model(info.id, info.path.stat().st_mtime))
