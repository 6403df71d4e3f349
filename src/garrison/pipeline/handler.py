"""The one generation handler both surfaces share: the pipeline's result as a whole body or a stream."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi.responses import JSONResponse, Response, StreamingResponse

from garrison.domain import EmbeddingRequest, EmbeddingResult, GenerationRequest
from garrison.pipeline.framer import Framer, frames
from garrison.pipeline.ledger import Origin
from garrison.pipeline.stages import Caller
from garrison.service import InferenceService


@dataclass(slots=True)
class Generation:
    """One HTTP request's way into the pipeline: the service, who is calling, and where from."""

    service: InferenceService
    caller: Caller
    origin: Origin
    # The classification the caller declared for what it sends (the X-Garrison-Data-Label header, on every
    # surface); checked against the caller's clearance and, by the egress stage, the model's trust.
    data_label: str | None = None

    async def respond(self, request: GenerationRequest, framer: Framer, *, stream: bool) -> Response:
        """Run `request` and answer in the surface's format: one JSON body, or a stream of frames."""
        self.origin.streaming = stream
        self._declare(request)
        if not stream:
            result = await self.service.complete(request, self.caller, self.origin)
            return JSONResponse(framer.whole(result))
        first, events = await self.service.start(request, self.caller, self.origin)
        body = frames(first, events, framer, self.origin.request_id)
        return StreamingResponse(body, media_type=framer.media_type, headers={"Cache-Control": "no-cache"})

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        self._declare(request)
        return await self.service.embed(request, self.caller, self.origin)

    def _declare(self, request: GenerationRequest | EmbeddingRequest) -> None:
        if self.data_label is not None and request.data_label is None:
            request.data_label = self.data_label  # an unknown name is the pipeline's 400 (param data_label)
