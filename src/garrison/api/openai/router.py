"""OpenAI-compatible routes: translate the body, hand it to the pipeline with a framer. Nothing else."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from garrison.api.deps import GenerationDep, ServiceDep, authorize, visible_models
from garrison.api.openai import translate
from garrison.api.openai.framer import OpenAIFramer
from garrison.api.openai.responses import ResponsesFramer, ResponsesRequest, ResponseStore, from_responses
from garrison.api.openai.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingsRequest

router = APIRouter(prefix="/v1", tags=["openai"])


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, generation: GenerationDep) -> Response:
    gen = translate.from_openai_chat(body)
    usage = bool(body.stream_options and body.stream_options.include_usage)
    return await generation.respond(gen, OpenAIFramer(gen, chat=True, include_usage=usage), stream=body.stream)


@router.post("/completions")
async def completions(body: CompletionRequest, generation: GenerationDep) -> Response:
    gen = translate.from_openai_completion(body)
    usage = bool(body.stream_options and body.stream_options.include_usage)
    return await generation.respond(gen, OpenAIFramer(gen, chat=False, include_usage=usage), stream=body.stream)


@router.post("/responses")
async def responses(body: ResponsesRequest, request: Request, generation: GenerationDep) -> Response:
    store: ResponseStore = request.app.state.responses
    key = generation.caller.key_id
    history = store.get(body.previous_response_id, key).messages if body.previous_response_id else None
    gen = from_responses(body, history)
    return await generation.respond(gen, ResponsesFramer(body, gen, store, key), stream=body.stream)


@router.post("/embeddings")
async def embeddings(body: EmbeddingsRequest, generation: GenerationDep) -> JSONResponse:
    result = await generation.embed(translate.from_openai_embeddings(body))
    return JSONResponse(translate.to_openai_embeddings(result, body.encoding_format))


@router.get("/models")
async def list_models(request: Request, service: ServiceDep) -> JSONResponse:
    models = await visible_models(request, service.registry)
    return JSONResponse({"object": "list", "data": [translate.to_openai_model(m.id, m.modified) for m in models]})


@router.get("/models/{model_id}")
async def get_model(model_id: str, request: Request, service: ServiceDep) -> JSONResponse:
    await authorize(request, None, model=model_id)
    info = service.model(model_id)
    return JSONResponse(translate.to_openai_model(info.id, info.modified))
