"""A scripted upstream on loopback (aiohttp, port 0) speaking OpenAI's /v1 and Ollama's /api, for unit tests.

Each test sets what the next answers are (`status`, `chunks`, `die_after`, `hang`, `revision`) and reads back
what the server saw (`requests`, `disconnects`). Never proof that a feature works with a real engine.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from garrison.domain import GenerationDone, GenerationRequest, TokenDelta
from garrison.engines.upstream.engine import UpstreamEngine


@dataclass
class Script:
    status: int = 200
    error_body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[str] = field(default_factory=lambda: ["Hel", "lo", "!"])
    chunk_delay: float = 0.0
    die_after: int | None = None  # close the connection after this many chunks (a crash mid-answer)
    hang: bool = False  # accept the request and never answer
    revision: str | None = "rev-1"
    models: list[str] = field(default_factory=lambda: ["up-model"])
    usage: bool = True
    probe_status: int = 200


class ScriptedUpstream:
    def __init__(self) -> None:
        self.script = Script()
        self.requests: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.probes = 0
        self.disconnects = 0
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()  # releases hanging and sleeping handlers at shutdown

    @property
    def openai_base(self) -> str:
        return f"{self.url}/v1"

    def paths(self) -> list[str]:
        return [p for p, _, _ in self.requests]

    async def start(self) -> ScriptedUpstream:
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.openai)
        app.router.add_post("/v1/completions", self.openai)
        app.router.add_post("/v1/embeddings", self.openai_embeddings)
        app.router.add_get("/api/tags", self.tags)
        app.router.add_post("/api/chat", self.ollama)
        app.router.add_post("/api/generate", self.ollama)
        app.router.add_post("/api/embed", self.ollama_embed)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _record(self, request: web.Request) -> dict[str, Any]:
        body = await request.json()
        self.requests.append((request.path, body, dict(request.headers)))
        return body

    def _error(self) -> web.Response | None:
        s = self.script
        if s.status == 200:
            return None
        body = s.error_body if s.error_body is not None else {"error": {"message": f"scripted {s.status}"}}
        text = body if isinstance(body, str) else json.dumps(body)
        return web.Response(status=s.status, text=text, headers=s.headers, content_type="application/json")

    async def _early(self) -> web.Response | None:
        """Hang or fail as scripted, before any answer."""
        if self.script.hang:
            await self._hang()
        return self._error()

    async def _hang(self) -> None:
        await self._stopping.wait()

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    async def models(self, request: web.Request) -> web.Response:
        self.probes += 1
        if self.script.probe_status != 200:
            return web.Response(status=self.script.probe_status, text="down")
        data = [{"id": m, "object": "model", **({"root": self.script.revision} if self.script.revision else {})}
                for m in self.script.models]
        return web.json_response({"object": "list", "data": data})

    async def tags(self, request: web.Request) -> web.Response:
        self.probes += 1
        if self.script.probe_status != 200:
            return web.Response(status=self.script.probe_status, text="down")
        models = [{"name": m, "model": m, **({"digest": self.script.revision} if self.script.revision else {})}
                  for m in self.script.models]
        return web.json_response({"models": models})

    async def _stream(
        self, request: web.Request, frames: list[bytes], tail: list[bytes], ctype: str
    ) -> web.StreamResponse:
        s = self.script
        response = web.StreamResponse(headers={"Content-Type": ctype})
        await response.prepare(request)
        try:
            for i, frame in enumerate(frames):
                if s.die_after is not None and i >= s.die_after:
                    assert request.transport is not None
                    request.transport.abort()  # a crash: the connection is reset mid-answer
                    return response
                await response.write(frame)
                if s.chunk_delay:
                    await self._pause(s.chunk_delay)
            for frame in tail:
                await response.write(frame)
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            self.disconnects += 1
        return response

    async def openai(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        s = self.script
        early = await self._early()
        if early is not None:
            return early
        chat = request.path.endswith("/chat/completions")
        usage = {"prompt_tokens": 7, "completion_tokens": len(s.chunks), "total_tokens": 7 + len(s.chunks)}
        if not body.get("stream"):
            if s.die_after is not None:
                assert request.transport is not None
                request.transport.abort()
                return web.Response()
            text = "".join(s.chunks)
            choice = {"index": 0, "finish_reason": "stop",
                      **({"message": {"role": "assistant", "content": text}} if chat else {"text": text})}
            return web.json_response({"choices": [choice], **({"usage": usage} if s.usage else {})})

        def chunk(piece: str | None, finish: str | None = None) -> bytes:
            choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
            if chat:
                choice["delta"] = {} if piece is None else {"content": piece}
            else:
                choice["text"] = piece or ""
            return b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\n"

        head = [b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
                .encode() + b"\n\n"] if chat else []
        frames = head + [chunk(p) for p in s.chunks]
        tail = [chunk(None, "stop")]
        if s.usage:
            tail.append(b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n")
        tail.append(b"data: [DONE]\n\n")
        return await self._stream(request, frames, tail, "text/event-stream")

    async def openai_embeddings(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        error = self._error()
        if error is not None:
            return error
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"index": i, "embedding": [float(len(t)), 1.0]} for i, t in reversed(list(enumerate(inputs)))]
        return web.json_response({"data": data, "usage": {"prompt_tokens": 3 * len(inputs)}})

    async def ollama(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        s = self.script
        early = await self._early()
        if early is not None:
            return early
        chat = request.path == "/api/chat"

        def line(piece: str, done: bool) -> dict[str, Any]:
            out: dict[str, Any] = {"model": body["model"], "done": done}
            if chat:
                out["message"] = {"role": "assistant", "content": piece}
            else:
                out["response"] = piece
            if done:
                out.update(done_reason="stop", prompt_eval_count=5, eval_count=len(s.chunks),
                           prompt_eval_duration=1000, eval_duration=2000, load_duration=10)
            return out

        if not body.get("stream", True):
            return web.json_response(line("".join(s.chunks), True))
        frames = [(json.dumps(line(p, False)) + "\n").encode() for p in s.chunks]
        return await self._stream(request, frames, [(json.dumps(line("", True)) + "\n").encode()],
                                  "application/x-ndjson")

    async def ollama_embed(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        error = self._error()
        if error is not None:
            return error
        return web.json_response({"embeddings": [[float(len(t)), 2.0] for t in body["input"]],
                                  "prompt_eval_count": 4})


async def generate_all(engine: UpstreamEngine, request: GenerationRequest) -> tuple[list[str], GenerationDone]:
    """Every delta an engine yields for `request`, and its closing event."""
    deltas: list[str] = []
    done: GenerationDone | None = None
    async for event in engine.generate(request):
        if isinstance(event, TokenDelta):
            deltas.append(event.text)
        elif isinstance(event, GenerationDone):
            done = event
    assert done is not None
    return deltas, done
