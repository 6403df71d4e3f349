"""A recording upstream: a real aiohttp server on loopback (port 0, its own thread and loop) that keeps a copy of
every request it receives, health probes included, and answers as an OpenAI-compatible server would.

Tests point a front garrison's `engine = "openai"` models at it and read `generations()` / `embeddings()` to
prove what left garrison and what never did. Its answers are fixed text; it stands for the remote network
boundary, never for a real engine's output.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from typing import Any

from aiohttp import web

ANSWER = "recorded answer"
GENERATION_PATHS = ("/v1/chat/completions", "/v1/completions")


@dataclass(frozen=True, slots=True)
class Received:
    method: str
    path: str
    body: Any


class Recorder:
    def __init__(self) -> None:
        self._received: list[Received] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="recording-upstream", daemon=True)
        self.url = ""

    def start(self) -> Recorder:
        self._thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=30)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def received(self) -> list[Received]:
        """Everything that arrived, in order (probes of /v1/models too)."""
        with self._lock:
            return list(self._received)

    def generations(self) -> list[Received]:
        return [r for r in self.received() if r.method == "POST" and r.path in GENERATION_PATHS]

    def embeddings(self) -> list[Received]:
        return [r for r in self.received() if r.method == "POST" and r.path == "/v1/embeddings"]

    async def _serve(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        with self._lock:
            self._received.append(Received(request.method, request.path, body))
        if request.path == "/v1/models":
            return web.json_response({"object": "list", "data": [{"id": "up-model", "object": "model"},
                                                                 {"id": "up-embed", "object": "model"}]})
        if request.path == "/v1/embeddings":
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [{"index": i, "object": "embedding", "embedding": [float(len(t)), 1.0]}
                    for i, t in enumerate(inputs)]
            return web.json_response({"object": "list", "data": data, "usage": {"prompt_tokens": len(inputs)}})
        if request.path in GENERATION_PATHS:
            return await self._generate(request, body, chat=request.path.endswith("/chat/completions"))
        return web.json_response({"error": {"message": f"no route {request.path}"}}, status=404)

    async def _generate(self, request: web.Request, body: dict[str, Any], *, chat: bool) -> web.StreamResponse:
        usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
        if not body.get("stream"):
            choice = {"index": 0, "finish_reason": "stop",
                      **({"message": {"role": "assistant", "content": ANSWER}} if chat else {"text": ANSWER})}
            return web.json_response({"object": "chat.completion" if chat else "text_completion",
                                      "choices": [choice], "usage": usage})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece, finish in ((ANSWER, None), (None, "stop")):
            choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
            if chat:
                choice["delta"] = {} if piece is None else {"role": "assistant", "content": piece}
            else:
                choice["text"] = piece or ""
            await response.write(b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\n")
        await response.write(b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
