"""An engine whose model runs elsewhere: one wire protocol (OpenAI or Ollama) over routed, pooled replicas.

Retries: a connection error, a 5xx or a broken answer moves the request to another replica while nothing has
been given to the caller: for a whole answer (`stream=False`) until it is complete, for a stream until its
first event. After that an upstream failure ends the stream with an error, never a second generation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

import aiohttp

from garrison.domain import (
    EmbeddingRequest,
    EmbeddingResult,
    GenerationEvent,
    GenerationRequest,
)
from garrison.engines.upstream.config import UpstreamModelConfig
from garrison.engines.upstream.errors import ReplicaFailure, describe, json_object, status_error, unsupported
from garrison.engines.upstream.health import HealthChecker
from garrison.engines.upstream.integrity import Probe
from garrison.engines.upstream.pool import ClientPool
from garrison.engines.upstream.routing import Attempts, Replica, Router
from garrison.errors import GarrisonError, UpstreamTimeout, UpstreamUnavailable
from garrison.settings import Settings

log = logging.getLogger(__name__)


class StreamDecoder(Protocol):
    """Turns a streamed answer, line by line, into domain events."""

    finished: bool

    def feed(self, line: bytes) -> list[GenerationEvent]: ...

    def finish(self) -> list[GenerationEvent]:
        """The stream ended (EOF): the closing events, or ReplicaFailure when it was cut short."""
        ...


class Wire(Protocol):
    """One upstream protocol: request bodies out, domain results in (pure functions, no I/O)."""

    name: str
    probe_path: str
    require_listed: bool

    def generation(self, request: GenerationRequest, model: str, stream: bool) -> tuple[str, dict[str, Any]]: ...

    def decoder(self, request: GenerationRequest, started_ns: int) -> StreamDecoder: ...

    def whole(self, data: dict[str, Any], request: GenerationRequest, started_ns: int) -> list[GenerationEvent]: ...

    def embedding(self, request: EmbeddingRequest, model: str) -> tuple[str, dict[str, Any]]: ...

    def embeddings(self, data: dict[str, Any], request: EmbeddingRequest) -> EmbeddingResult: ...

    def probe(self, data: dict[str, Any], model: str) -> Probe: ...


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _transport_failure(exc: BaseException) -> ReplicaFailure:
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        return ReplicaFailure(describe(exc), "protocol")
    return ReplicaFailure(describe(exc), "connect")


class UpstreamEngine:
    """Serves one configured remote model through its replicas (implements Engine, or Embedder for kind=embed)."""

    def __init__(self, config: UpstreamModelConfig, wire: Wire) -> None:
        self.config = config
        self.wire = wire
        self.router = Router(
            config.upstreams, policy=config.routing, eject_after=config.eject_after, eject_for=config.eject_for,
            verified_only=config.revision is not None,
        )
        self.pool = ClientPool(
            max_connections=config.max_connections, connect_timeout=config.timeouts.connect,
            api_key=config.api_key(), tls=config.tls.context(),
        )
        self.health = HealthChecker(
            self.router, self._probe, model=config.remote_name, pinned=config.revision,
            require_listed=wire.require_listed, interval=config.health.interval, timeout=config.health.timeout,
        )
        self._started = False
        self._starting: asyncio.Lock | None = None

    # -- the engine protocol -------------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Generate on a replica; `request.stream` False fetches the whole answer in one upstream call."""
        self._check_features(request)
        await self.start()
        stream = request.stream
        path, body = self.wire.generation(request, self.config.remote_name, stream)
        started = time.perf_counter_ns()
        if not stream:
            data = await self._call(path, _dumps(body), request)
            for event in self.wire.whole(data, request, started):
                yield event
            return
        async for event in self._stream(path, _dumps(body), request, started):
            yield event

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        if "embeddings" not in (self.config.capabilities or []):
            raise unsupported(self.config.id, "embeddings")
        await self.start()
        path, body = self.wire.embedding(request, self.config.remote_name)
        return self.wire.embeddings(await self._call(path, _dumps(body), request), request)

    async def start(self) -> None:
        """Start health checks; a model with a pinned revision first probes every replica once."""
        if self._started:
            return
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._started:
                return
            if self.config.revision is not None:
                await self.health.check_all()
            self.health.start()
            self._started = True

    async def aclose(self) -> None:
        await self.health.stop()
        await self.pool.aclose()
        self._started = False

    async def probe(self) -> dict[str, Any]:
        """Probe every replica once, then describe them (for `garrison models list`, outside a server)."""
        await self.health.check_all()
        return self.describe()

    def describe(self) -> dict[str, Any]:
        """The model's upstream state for /health and `garrison models list`."""
        return {
            "engine": self.config.engine,
            "upstream_model": self.config.remote_name,
            "routing": self.config.routing,
            "revision": self.config.revision,
            "replicas": self.router.describe(),
        }

    # -- requests ------------------------------------------------------------------------------------------

    def _headers(self, request: GenerationRequest | EmbeddingRequest | None) -> dict[str, str] | None:
        """Headers of one attempt beyond the pool's (None for a probe's `request`); a subclass adds its own."""
        return None

    def _answered(self, request: GenerationRequest | EmbeddingRequest, replica: Replica, headers: Any) -> None:
        """A replica answered `request` with a success status (a subclass notes what it needs)."""

    def _check_features(self, request: GenerationRequest) -> None:
        caps = self.config.capabilities or []
        if request.is_chat and "chat" not in caps:
            raise unsupported(self.config.id, "chat")
        if not request.is_chat and "completions" not in caps:
            raise unsupported(self.config.id, "completions")
        if request.suffix is not None and "fim" not in caps:
            raise unsupported(self.config.id, "fill-in-the-middle (suffix)")

    def _raise_status(self, replica: Replica, status: int, raw: bytes, headers: Any, path: str) -> None:
        error = status_error(status, raw, headers, model_id=self.config.id, replica=replica.url, path=path)
        if isinstance(error, GarrisonError):
            self.router.succeeded(replica)  # it answered; the request was at fault
        raise error

    async def _call(self, path: str, body: bytes, request: GenerationRequest | EmbeddingRequest) -> dict[str, Any]:
        """POST a request whose answer is one JSON object, retrying on other replicas until one answers."""
        attempts = Attempts(self.router, self.config.id, self.config.retries)
        while True:
            replica = attempts.next()
            try:
                data = await self._post(replica, path, body, request)
            except ReplicaFailure as failure:
                if attempts.failed(replica, failure):
                    continue
                raise attempts.exhausted() from None
            finally:
                attempts.done(replica)
            self.router.succeeded(replica)
            return data

    async def _post(
        self, replica: Replica, path: str, body: bytes, request: GenerationRequest | EmbeddingRequest
    ) -> dict[str, Any]:
        url = replica.url + path
        total = self.config.timeouts.total
        sent = self._headers(request)
        try:
            async with asyncio.timeout(total), self.pool.session().post(url, data=body, headers=sent) as response:
                raw = await response.read()
                status, headers = response.status, response.headers
        except aiohttp.ClientError as exc:
            raise _transport_failure(exc) from None
        except TimeoutError:
            raise ReplicaFailure(f"no complete answer within {total:g} s", "timeout") from None
        if status >= 300:
            self._raise_status(replica, status, raw, headers, path)
        self._answered(request, replica, headers)
        return json_object(raw, url)

    async def _stream(
        self, path: str, body: bytes, request: GenerationRequest, started: int
    ) -> AsyncIterator[GenerationEvent]:
        """Relay a streamed answer chunk by chunk; retries happen only before its first event."""
        attempts = Attempts(self.router, self.config.id, self.config.retries)
        while True:
            replica = attempts.next()
            decoder = self.wire.decoder(request, started)
            try:
                response, first = await self._open(replica, path, body, decoder, request)
                break
            except ReplicaFailure as failure:
                attempts.done(replica)
                if attempts.failed(replica, failure):
                    continue
                raise attempts.exhausted() from None
            except BaseException:
                attempts.done(replica)
                raise
        self.router.succeeded(replica)  # it is answering
        idle = self.config.timeouts.idle
        complete = False
        try:
            events = first
            while True:
                if decoder.finished:  # read the rest first, so the connection can go back to the pool
                    complete = await _drain(response, idle)
                for event in events:
                    yield event
                if decoder.finished:
                    return
                try:
                    async with asyncio.timeout(idle):
                        line = await response.content.readline()
                except TimeoutError:
                    raise ReplicaFailure(f"no chunk for {idle:g} s", "timeout") from None
                except aiohttp.ClientError as exc:
                    raise _transport_failure(exc) from None
                events = decoder.feed(line) if line else decoder.finish()
        except ReplicaFailure as failure:
            self.router.failed(replica, failure)
            error = UpstreamTimeout if failure.kind == "timeout" else UpstreamUnavailable
            raise error(f"the upstream {replica.url} of '{self.config.id}' failed mid-stream: {failure.message}") \
                from None
        finally:
            attempts.done(replica)
            if complete:
                response.release()  # back to the pool
            else:
                response.close()  # the caller left or the stream broke: drop the connection now

    async def _open(
        self, replica: Replica, path: str, body: bytes, decoder: StreamDecoder, request: GenerationRequest
    ) -> tuple[aiohttp.ClientResponse, list[GenerationEvent]]:
        """Send the request and read up to the first event (within the first-token timeout)."""
        first_token = self.config.timeouts.first_token
        response: aiohttp.ClientResponse | None = None
        try:
            async with asyncio.timeout(first_token):
                response = await self.pool.session().post(replica.url + path, data=body,
                                                          headers=self._headers(request))
                if response.status >= 300:
                    raw = await response.read()
                    response.release()
                    self._raise_status(replica, response.status, raw, response.headers, path)
                self._answered(request, replica, response.headers)
                while True:
                    line = await response.content.readline()
                    events = decoder.feed(line) if line else decoder.finish()
                    if events:
                        return response, events
        except aiohttp.ClientError as exc:
            if response is not None:
                response.close()
            raise _transport_failure(exc) from None
        except TimeoutError:
            if response is not None:
                response.close()
            raise ReplicaFailure(f"no first token within {first_token:g} s", "timeout") from None
        except BaseException:
            if response is not None:
                response.close()
            raise

    async def _probe(self, replica: Replica) -> Probe:
        url = replica.url + self.wire.probe_path
        async with self.pool.session().get(url, headers=self._headers(None)) as response:
            raw = await response.read()
            if response.status >= 300:
                self._raise_status(replica, response.status, raw, response.headers, self.wire.probe_path)
        return self.wire.probe(json_object(raw, url), self.config.remote_name)


async def _drain(response: aiohttp.ClientResponse, idle: float) -> bool:
    """Read what follows a stream's last event (normally only the chunked-encoding end); True at EOF."""
    try:
        async with asyncio.timeout(min(idle, 1.0)):
            await response.content.read()
    except (TimeoutError, aiohttp.ClientError):
        return False
    return response.content.at_eof()


def create_engine(config: UpstreamModelConfig, settings: Settings | None = None) -> UpstreamEngine:
    """The engine for one `[[models]]` entry with engine = "openai", "ollama" or "garrison" (which needs the
    settings for this gateway's federation name and key)."""
    from garrison.engines.upstream.ollama import OllamaWire
    from garrison.engines.upstream.openai import OpenAIWire

    if config.engine == "garrison":
        from garrison.engines.upstream.garrison import GarrisonEngine
        from garrison.errors import ConfigError
        from garrison.security.federation import load_signer

        if settings is None:
            raise ConfigError(f"model '{config.id}': engine = 'garrison' needs the gateway's settings")
        return GarrisonEngine(config, load_signer(settings), ttl_s=settings.federation.token_ttl_s,
                              env=settings.auth.env)

    wire: Wire = OpenAIWire() if config.engine == "openai" else OllamaWire(config.context_length)
    return UpstreamEngine(config, wire)
