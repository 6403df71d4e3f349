"""Streaming HTTP client (aiohttp, no connection limit) timing every chunk of OpenAI SSE or Ollama NDJSON."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from garrison.bench.config import BenchConfig
from garrison.bench.prompts import Prompt

ERROR_BODY_LIMIT = 300


@dataclass(slots=True)
class RequestRecord:
    """What happened to one request; times are `time.perf_counter()` seconds."""

    index: int
    # When the load generator wanted it sent, and when its bytes were written to the socket: connection
    # set-up and a busy client show up as the gap between the two (client wait), never as server latency.
    scheduled_at: float
    sent_at: float = 0.0
    written: bool = False
    end_at: float = 0.0
    chunk_times: list[float] = field(default_factory=list)
    output_tokens: int = 0
    output_tokens_source: str = "chunks"
    prompt_tokens: int = 0
    prompt_tokens_source: str = "estimate"
    error: str | None = None
    error_detail: str = ""
    http_status: int | None = None
    reused: bool = False  # the last attempt went out on a kept-alive connection
    retries: int = 0  # attempts resent because a kept-alive connection turned out closed (stale)

    @property
    def ok(self) -> bool:
        """True when the request completed with streamed content and no error."""
        return self.error is None


@dataclass(slots=True)
class Event:
    """One parsed stream line: whether it carried content, the usage it reported, an error, or the end."""

    content: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    done: bool = False


class Backend(Protocol):
    """A server dialect: where to post, what to post, and how to read one line of the stream."""

    def endpoint(self, base_url: str) -> str:
        """Full URL of the streaming chat endpoint."""
        ...

    def payload(self, config: BenchConfig, prompt: Prompt) -> dict[str, Any]:
        """JSON body of a streaming request for `prompt`."""
        ...

    def parse(self, line: bytes) -> Event | None:
        """The event in one line of the response, or None for lines that carry nothing."""
        ...


class OpenAIBackend:
    """OpenAI chat completions over SSE, asking for usage and for EOS to be ignored."""

    def endpoint(self, base_url: str) -> str:
        """Append /v1/chat/completions unless the URL already names the endpoint or /v1."""
        base = base_url.rstrip("/")
        if base.endswith("/chat/completions"):
            return base
        return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"

    def payload(self, config: BenchConfig, prompt: Prompt) -> dict[str, Any]:
        """Streaming body; `ignore_eos` and `min_tokens` pin the output length where the server allows."""
        body: dict[str, Any] = {
            "model": config.model,
            "messages": prompt.messages,
            "max_tokens": prompt.max_tokens,
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if config.ignore_eos:
            body["ignore_eos"] = True
            body["min_tokens"] = prompt.max_tokens
        return body

    def parse(self, line: bytes) -> Event | None:
        """Read one SSE line: `data: {...}` chunks, `data: [DONE]`, error events; others are skipped."""
        if not line.startswith(b"data:"):
            return None
        data = line[5:].strip()
        if data == b"[DONE]":
            return Event(done=True)
        if not data:
            return None
        chunk = json.loads(data)
        if not isinstance(chunk, dict):
            return None
        if chunk.get("error"):
            error = chunk["error"]
            return Event(error=str(error.get("message", error) if isinstance(error, dict) else error))
        event = Event()
        choices = chunk.get("choices") or []
        if choices and isinstance(choices[0], dict):
            choice = choices[0]
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")
            event.content = bool(text or choice.get("text"))
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            event.prompt_tokens = usage.get("prompt_tokens")
            event.completion_tokens = usage.get("completion_tokens")
        return event


class OllamaBackend:
    """Ollama /api/chat over NDJSON; `num_predict` caps the output (Ollama has no EOS control)."""

    def endpoint(self, base_url: str) -> str:
        """Append /api/chat unless the URL already ends with it."""
        base = base_url.rstrip("/")
        return base if base.endswith("/api/chat") else f"{base}/api/chat"

    def payload(self, config: BenchConfig, prompt: Prompt) -> dict[str, Any]:
        """Streaming body with the output cap and greedy sampling in `options`."""
        options = {"num_predict": prompt.max_tokens, "temperature": 0.0}
        return {"model": config.model, "messages": prompt.messages, "stream": True, "options": options}

    def parse(self, line: bytes) -> Event | None:
        """Read one NDJSON line: message chunks, the final `done` line with counts, or an error."""
        if not line:
            return None
        chunk = json.loads(line)
        if not isinstance(chunk, dict):
            return None
        if chunk.get("error"):
            return Event(error=str(chunk["error"]))
        message = chunk.get("message") or {}
        event = Event(
            content=bool(message.get("content") or message.get("thinking") or chunk.get("response"))
        )
        if chunk.get("done"):
            event.done = True
            event.prompt_tokens = chunk.get("prompt_eval_count")
            event.completion_tokens = chunk.get("eval_count")
        return event


BACKENDS: dict[str, Backend] = {"openai": OpenAIBackend(), "ollama": OllamaBackend()}


async def _on_request_written(
    session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestChunkSentParams
) -> None:
    """Stamp the moment the request body goes to the socket (aiohttp calls this just before the write)."""
    record = getattr(context, "trace_request_ctx", None)
    if isinstance(record, RequestRecord) and not record.written:
        record.sent_at = time.perf_counter()
        record.written = True


async def _on_connection_reused(
    session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceConnectionReuseconnParams
) -> None:
    """Note that the request goes out on a kept-alive connection (the server may have closed it meanwhile)."""
    record = getattr(context, "trace_request_ctx", None)
    if isinstance(record, RequestRecord):
        record.reused = True


# A kept-alive connection the server closed while it sat idle fails the next request before any response:
# these are the errors that shows up as (the server never answered on it).
_STALE = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
MAX_STALE_RETRIES = 2
# Idle connections are dropped before common server keep-alive timeouts (llama-server, nginx: 5 s).
KEEPALIVE_S = 4.0


def _stale(record: RequestRecord, exc: BaseException) -> bool:
    """A failure of a reused connection before any response byte: the server's close, not the server's answer."""
    return (isinstance(exc, _STALE) and record.reused and record.http_status is None and not record.chunk_times
            and record.retries < MAX_STALE_RETRIES)


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return "disconnected"
    if isinstance(exc, aiohttp.ClientError):
        return "http_client"
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return "bad_response"
    return type(exc).__name__


class StreamClient:
    """One aiohttp session shared by every request of a run; `send` never raises for request failures."""

    def __init__(self, config: BenchConfig) -> None:
        self._config = config
        self._backend = BACKENDS[config.backend]
        self._url = self._backend.endpoint(config.url)
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream, application/x-ndjson",
        }
        if config.api_key:
            self._headers["Authorization"] = f"Bearer {config.api_key}"
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        """The endpoint requests are posted to."""
        return self._url

    async def __aenter__(self) -> StreamClient:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=KEEPALIVE_S)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(30.0, self._config.timeout_s))
        tracing = aiohttp.TraceConfig()
        tracing.on_request_chunk_sent.append(_on_request_written)
        tracing.on_connection_reuseconn.append(_on_connection_reused)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False, trace_configs=[tracing]
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, prompt: Prompt, index: int, scheduled_at: float) -> RequestRecord:
        """Stream one request, timed from when its bytes are written; failures are recorded, not raised."""
        assert self._session is not None, "use StreamClient as an async context manager"
        record = RequestRecord(index=index, scheduled_at=scheduled_at)
        record.prompt_tokens = prompt.estimated_input_tokens
        body = json.dumps(self._backend.payload(self._config, prompt)).encode()
        record.sent_at = time.perf_counter()
        try:
            async with asyncio.timeout(self._config.timeout_s):
                while True:
                    try:
                        await self._stream(body, record)
                        break
                    except _STALE as exc:
                        if not _stale(record, exc):
                            raise
                        # resend on a fresh connection: the closed one never carried this request's answer
                        record.retries += 1
                        record.reused = record.written = False
                        record.sent_at = time.perf_counter()
        except Exception as exc:  # every failure is a measurement, never a crash
            finished = record.end_at and record.error is None  # the end-of-stream marker had arrived
            if not finished:
                record.error = record.error or _error_kind(exc)
                record.error_detail = (
                    record.error_detail or (str(exc) or type(exc).__name__)[:ERROR_BODY_LIMIT]
                )
        if not record.end_at:
            record.end_at = time.perf_counter()
        if record.error is None and not record.chunk_times:
            record.error, record.error_detail = "empty_response", "the stream carried no content"
        if record.output_tokens_source == "chunks":
            record.output_tokens = len(record.chunk_times)
        return record

    async def _stream(self, body: bytes, record: RequestRecord) -> None:
        assert self._session is not None
        post = self._session.post(self._url, data=body, headers=self._headers, trace_request_ctx=record)
        async with post as response:
            record.http_status = response.status
            if response.status != 200:
                text = (await response.read())[:ERROR_BODY_LIMIT].decode("utf-8", "replace")
                record.error, record.error_detail = f"http_{response.status}", text
                return
            pending = b""
            async for data in response.content.iter_any():
                now = time.perf_counter()
                pending += data
                if b"\n" not in data:
                    continue
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if self._handle(line.strip(), now, record):
                        return
            if pending.strip():
                self._handle(pending.strip(), time.perf_counter(), record)
            record.end_at = record.end_at or time.perf_counter()

    def _handle(self, line: bytes, now: float, record: RequestRecord) -> bool:
        """Apply one line to the record; True when the stream ended with an error."""
        if not line:
            return False
        event = self._backend.parse(line)
        if event is None:
            return False
        if event.content:
            record.chunk_times.append(now)
        if event.completion_tokens is not None:
            record.output_tokens = int(event.completion_tokens)
            record.output_tokens_source = "usage"
        if event.prompt_tokens is not None:
            record.prompt_tokens = int(event.prompt_tokens)
            record.prompt_tokens_source = "usage"
        if event.done and not record.end_at:
            record.end_at = now
        if event.error is not None:
            record.end_at = record.end_at or now
            record.error, record.error_detail = "stream_error", event.error[:ERROR_BODY_LIMIT]
            return True
        return False
