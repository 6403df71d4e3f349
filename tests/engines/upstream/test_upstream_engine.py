"""The upstream engines against scripted upstreams on loopback: wire formats, retries, ejection, errors."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from scripted_upstream import ScriptedUpstream, generate_all

from garrison.domain import (
    ChatMessage,
    EmbeddingRequest,
    GenerationDone,
    GenerationEvent,
    GenerationRequest,
    SamplingParams,
    TokenDelta,
)
from garrison.engines.upstream.config import UpstreamModelConfig
from garrison.engines.upstream.engine import UpstreamEngine, create_engine
from garrison.errors import (
    ConfigError,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    RateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)


@pytest.fixture
async def upstreams() -> AsyncIterator[list[ScriptedUpstream]]:
    servers = [await ScriptedUpstream().start() for _ in range(2)]
    yield servers
    for server in servers:
        await server.stop()


def _engine(urls: list[str], engine: str = "openai", **overrides: Any) -> UpstreamEngine:
    fields: dict[str, Any] = {"id": "remote", "engine": engine, "upstreams": urls, "upstream_model": "up-model",
                              "health": {"interval": 0}, **overrides}
    return create_engine(UpstreamModelConfig(**fields))


def _chat(stream: bool = True, **sampling: Any) -> GenerationRequest:
    return GenerationRequest(model="remote", messages=[ChatMessage("user", "hi")], stream=stream,
                             sampling=SamplingParams(**sampling))


async def _collect(engine: UpstreamEngine, request: GenerationRequest) -> tuple[str, GenerationDone]:
    deltas, done = await generate_all(engine, request)
    return "".join(deltas), done


async def _eventually(condition: Callable[[], bool | Awaitable[bool]], what: str, deadline_s: float = 10.0) -> None:
    """Poll until `condition` holds (a deadline, never a fixed sleep, is the synchronisation)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        result = condition()
        if result if isinstance(result, bool) else await result:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


async def test_openai_stream_relays_chunks_and_usage(upstreams: list[ScriptedUpstream]) -> None:
    up = upstreams[0]
    engine = _engine([up.openai_base], api_key_env=None)
    try:
        events: list[GenerationEvent] = [e async for e in engine.generate(_chat(max_tokens=9, top_k=40, seed=3))]
    finally:
        await engine.aclose()
    assert [e.text for e in events if isinstance(e, TokenDelta)] == ["Hel", "lo", "!"]
    done = events[-1]
    assert isinstance(done, GenerationDone)
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.finish_reason) == (7, 3, "stop")
    path, body, _ = up.requests[0]
    assert path == "/v1/chat/completions"
    assert body["model"] == "up-model" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert (body["max_tokens"], body["top_k"], body["seed"]) == (9, 40, 3)
    assert "min_p" not in body and "repetition_penalty" not in body  # engine extensions only when set


async def test_openai_whole_answer_and_completion_with_suffix(upstreams: list[ScriptedUpstream]) -> None:
    up = upstreams[0]
    engine = _engine([up.openai_base])
    try:
        text, done = await _collect(engine, _chat(stream=False))
        fim = GenerationRequest(model="remote", prompt="def f(", suffix="\n    return x", raw=True, stream=False)
        fim_text, _ = await _collect(engine, fim)
    finally:
        await engine.aclose()
    assert text == fim_text == "Hello!"
    assert done.usage.completion_tokens == 3
    assert up.requests[0][1]["stream"] is False and "stream_options" not in up.requests[0][1]
    path, body, _ = up.requests[1]
    assert path == "/v1/completions"
    assert (body["prompt"], body["suffix"]) == ("def f(", "\n    return x")


async def test_openai_embeddings_keep_input_order(upstreams: list[ScriptedUpstream]) -> None:
    engine = _engine([upstreams[0].openai_base], kind="embed")
    try:
        result = await engine.embed(EmbeddingRequest(model="remote", inputs=["a", "bbb"]))
    finally:
        await engine.aclose()
    assert result.vectors == [[1.0, 1.0], [3.0, 1.0]]  # the scripted server answers in reverse index order
    assert result.prompt_tokens == 6


async def test_ollama_chat_generate_and_embed(upstreams: list[ScriptedUpstream]) -> None:
    up = upstreams[0]
    engine = _engine([up.url], engine="ollama", context_length=8192, capabilities=["chat", "completions", "fim",
                                                                                    "embeddings"])
    try:
        text, done = await _collect(engine, _chat(repeat_penalty=1.1))
        raw, _ = await _collect(engine, GenerationRequest(model="remote", prompt="Once", raw=True, stream=False))
        await _collect(engine, GenerationRequest(model="remote", prompt="a", suffix="b", raw=True))
        vectors = await engine.embed(EmbeddingRequest(model="remote", inputs=["xy"]))
    finally:
        await engine.aclose()
    assert text == raw == "Hello!"
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.timings.eval_ns) == (5, 3, 2000)
    chat, generate, fim, embed = (body for _, body, _ in up.requests)
    assert chat["options"]["num_ctx"] == 8192 and chat["options"]["repeat_penalty"] == 1.1
    assert generate["raw"] is True and generate["stream"] is False
    assert fim["suffix"] == "b" and "raw" not in fim
    assert embed["input"] == ["xy"] and vectors.vectors == [[2.0, 2.0]]
    assert up.paths() == ["/api/chat", "/api/generate", "/api/generate", "/api/embed"]


async def test_api_key_is_sent_and_never_shown(upstreams: list[ScriptedUpstream], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TEST_UPSTREAM_KEY", "sk-very-secret")
    engine = _engine([upstreams[0].openai_base], api_key_env="TEST_UPSTREAM_KEY")
    try:
        await _collect(engine, _chat())
    finally:
        await engine.aclose()
    assert upstreams[0].requests[0][2]["Authorization"] == "Bearer sk-very-secret"
    assert "sk-very-secret" not in repr(engine.pool) + str(engine.describe())
    monkeypatch.delenv("TEST_UPSTREAM_KEY")
    with pytest.raises(ConfigError, match="TEST_UPSTREAM_KEY"):
        _engine([upstreams[0].openai_base], api_key_env="TEST_UPSTREAM_KEY")


async def test_5xx_retries_on_another_replica_then_ejects(upstreams: list[ScriptedUpstream]) -> None:
    bad, good = upstreams
    bad.script.status = 500
    engine = _engine([bad.openai_base, good.openai_base], routing="round_robin", eject_after=2)
    try:
        for stream in (True, False, True, False):
            text, _ = await _collect(engine, _chat(stream=stream))
            assert text == "Hello!"
        states = {r["url"]: r for r in engine.describe()["replicas"]}
    finally:
        await engine.aclose()
    assert len(bad.requests) == 2  # ejected after its second consecutive failure, then never tried
    assert len(good.requests) == 4
    assert states[bad.openai_base]["state"] == "ejected"
    assert "HTTP 500" in states[bad.openai_base]["reason"]
    assert states[good.openai_base]["state"] == "healthy"


async def test_connection_refused_is_retried(upstreams: list[ScriptedUpstream]) -> None:
    engine = _engine([_closed_port_url(), upstreams[0].openai_base], routing="round_robin")
    try:
        texts = [(await _collect(engine, _chat(stream=s)))[0] for s in (True, False, True)]
    finally:
        await engine.aclose()
    assert texts == ["Hello!"] * 3


async def test_whole_answer_cut_mid_body_is_retried(upstreams: list[ScriptedUpstream]) -> None:
    dying, good = upstreams
    dying.script.die_after = 0
    engine = _engine([dying.openai_base, good.openai_base], routing="round_robin")
    try:
        results = [await _collect(engine, _chat(stream=False)) for _ in range(4)]
    finally:
        await engine.aclose()
    assert [t for t, _ in results] == ["Hello!"] * 4
    assert dying.requests  # it was tried, and the requests it dropped went to the other replica


async def test_no_retry_after_the_first_event(upstreams: list[ScriptedUpstream]) -> None:
    dying, other = upstreams
    dying.script.die_after = 2  # the role chunk and "Hel" go out, then the connection is reset
    engine = _engine([dying.openai_base, other.openai_base], routing="round_robin")
    seen: list[str] = []
    try:
        with pytest.raises(UpstreamUnavailable, match="mid-stream") as info:
            async for event in engine.generate(_chat()):
                if isinstance(event, TokenDelta):
                    seen.append(event.text)
    finally:
        await engine.aclose()
    assert seen == ["Hel"]
    assert info.value.status == 502
    assert other.requests == []  # never a second generation once output reached the caller


async def test_stream_cut_before_the_first_event_is_retried(upstreams: list[ScriptedUpstream]) -> None:
    dying, other = upstreams
    dying.script.die_after = 1  # only the empty role chunk went out: nothing the caller saw
    engine = _engine([dying.openai_base, other.openai_base], routing="round_robin")
    try:
        text, _ = await _collect(engine, _chat())
    finally:
        await engine.aclose()
    assert text == "Hello!"
    assert len(dying.requests) == 1 and len(other.requests) == 1


@pytest.mark.parametrize(
    ("status", "body", "headers", "error", "message"),
    [
        (404, {"error": {"message": "The model `up-model` does not exist."}}, {}, ModelNotFound, "remote"),
        (404, {"detail": "Not Found"}, {}, InvalidRequest, "has no /chat/completions endpoint"),
        (429, {"error": {"message": "slow down"}}, {"Retry-After": "7"}, RateLimited, "slow down"),
        (400, {"error": {"message": "temperature must be <= 2", "param": "temperature"}}, {}, InvalidRequest,
         "temperature must be <= 2"),
        (400, {"error": "Ollama-style message"}, {}, InvalidRequest, "Ollama-style message"),
        (422, {"detail": [{"loc": ["body", "top_p"], "msg": "too big"}]}, {}, InvalidRequest, "top_p: too big"),
        (401, {"error": "bad key"}, {}, UpstreamUnavailable, "api_key_env"),
    ],
)
async def test_upstream_4xx_map_to_garrison_errors(
    upstreams: list[ScriptedUpstream], status: int, body: Any, headers: dict[str, str], error: type, message: str
) -> None:
    up, other = upstreams
    up.script.status, up.script.error_body, up.script.headers = status, body, headers
    engine = _engine([up.openai_base, other.openai_base], routing="round_robin")
    try:
        for stream in (True, False):
            with pytest.raises(error, match=message) as info:
                async for _ in engine.generate(_chat(stream=stream)):
                    pass
            engine.router._turn = iter(range(0, 10**6, 2))  # type: ignore[assignment]  # the scripted one again
    finally:
        await engine.aclose()
    assert other.requests == []  # a client error is never retried elsewhere
    if error is RateLimited:
        assert info.value.retry_after == 7.0 and info.value.status == 429
    if status == 400 and "param" in str(body):
        assert info.value.param == "temperature"


async def test_no_replica_answers_is_502_naming_each(upstreams: list[ScriptedUpstream]) -> None:
    for up in upstreams:
        up.script.status = 502
    engine = _engine([u.openai_base for u in upstreams])
    try:
        with pytest.raises(UpstreamUnavailable) as info:
            await _collect(engine, _chat(stream=False))
    finally:
        await engine.aclose()
    assert info.value.status == 502 and info.value.code == "upstream_unavailable"
    assert all(u.openai_base in info.value.message for u in upstreams)


async def test_all_replicas_busy_is_503_with_retry_after(upstreams: list[ScriptedUpstream]) -> None:
    for up in upstreams:
        up.script.status, up.script.headers = 503, {"Retry-After": "3"}
    engine = _engine([u.openai_base for u in upstreams])
    try:
        with pytest.raises(Overloaded) as info:
            await _collect(engine, _chat())
    finally:
        await engine.aclose()
    assert info.value.retry_after == 3.0


async def test_first_token_and_idle_timeouts_are_504(upstreams: list[ScriptedUpstream]) -> None:
    hanging, slow = upstreams
    hanging.script.hang = True
    engine = _engine([hanging.openai_base], timeouts={"first_token": 0.3})
    try:
        with pytest.raises(UpstreamTimeout, match="first token") as info:
            await _collect(engine, _chat())
        assert info.value.status == 504
    finally:
        await engine.aclose()
    slow.script.chunk_delay = 0.8
    engine = _engine([slow.openai_base], timeouts={"idle": 0.3})
    try:
        with pytest.raises(UpstreamTimeout, match="no chunk for 0.3 s"):
            await _collect(engine, _chat())
    finally:
        await engine.aclose()


async def test_closing_the_stream_closes_the_upstream_request(upstreams: list[ScriptedUpstream]) -> None:
    up = upstreams[0]
    up.script.chunks = [f"t{i} " for i in range(1000)]
    up.script.chunk_delay = 0.02
    engine = _engine([up.openai_base])
    try:
        events = engine.generate(_chat())
        first = await anext(events)
        assert isinstance(first, TokenDelta)
        await events.aclose()  # type: ignore[attr-defined]  # the client went away
        await _eventually(lambda: up.disconnects == 1, "the upstream to see the disconnect")
        assert engine.router.replicas[0].outstanding == 0
    finally:
        await engine.aclose()


async def test_least_outstanding_prefers_the_idle_replica(upstreams: list[ScriptedUpstream]) -> None:
    busy, idle = upstreams
    busy.script.chunks = [f"t{i}" for i in range(500)]
    busy.script.chunk_delay = 0.02
    engine = _engine([busy.openai_base, idle.openai_base])
    engine.router._turn = iter(range(0, 10**6, 2))  # type: ignore[assignment]  # ties go to the first replica
    try:
        long = engine.generate(_chat())
        await anext(long)  # one request in flight on `busy`
        for _ in range(3):
            await _collect(engine, _chat(stream=False))
        await long.aclose()  # type: ignore[attr-defined]
    finally:
        await engine.aclose()
    assert len(busy.requests) == 1 and len(idle.requests) == 3


async def test_pinned_revision_refuses_drifted_replicas(upstreams: list[ScriptedUpstream]) -> None:
    pinned, drifted = upstreams
    drifted.script.revision = "rev-2"
    engine = _engine([pinned.openai_base, drifted.openai_base], revision="rev-1", routing="round_robin")
    try:
        for _ in range(3):
            await _collect(engine, _chat())
        states = {r["url"]: r for r in engine.describe()["replicas"]}
        pinned.script.revision = "rev-3"  # the last good replica drifts too
        await engine.health.check_all()
        with pytest.raises(UpstreamUnavailable, match="pins 'rev-1'"):
            await _collect(engine, _chat())
    finally:
        await engine.aclose()
    assert len(pinned.requests) == 3 and drifted.requests == []
    assert states[drifted.openai_base]["state"] == "drifted"
    assert states[pinned.openai_base]["revision"] == "rev-1"


async def test_ollama_digest_pin_and_unlisted_model(upstreams: list[ScriptedUpstream]) -> None:
    good, unlisted = upstreams
    digest = "a" * 64
    good.script.revision = digest
    unlisted.script.models = ["other"]
    engine = _engine([good.url, unlisted.url], engine="ollama", revision=f"sha256:{digest.upper()}",
                     upstream_model="up-model:latest")
    good.script.models = ["up-model:latest"]
    try:
        text, _ = await _collect(engine, _chat())
        states = {r["url"]: r for r in engine.describe()["replicas"]}
    finally:
        await engine.aclose()
    assert text == "Hello!"
    assert states[good.url]["state"] == "healthy"
    assert states[unlisted.url]["state"] == "drifted" and "does not list" in states[unlisted.url]["reason"]


async def test_health_checks_eject_and_readmit(upstreams: list[ScriptedUpstream]) -> None:
    flaky, steady = upstreams
    engine = _engine([flaky.openai_base, steady.openai_base], health={"interval": 0.05, "timeout": 1.0})
    try:
        await engine.start()
        await _eventually(lambda: flaky.probes > 0 and steady.probes > 0, "the first probes")
        flaky.script.probe_status = 500
        await _eventually(lambda: engine.router.replicas[0].state == "unhealthy", "the failing probe")
        for _ in range(3):
            await _collect(engine, _chat(stream=False))
        assert flaky.requests == []
        flaky.script.probe_status = 200
        await _eventually(lambda: engine.router.replicas[0].state == "healthy", "readmission")
    finally:
        await engine.aclose()


async def test_unsupported_features_are_clear_400s(upstreams: list[ScriptedUpstream]) -> None:
    engine = _engine([upstreams[0].openai_base], capabilities=["chat"])
    try:
        with pytest.raises(InvalidRequest, match="completions") as info:
            await _collect(engine, GenerationRequest(model="remote", prompt="x", raw=True))
        assert (info.value.status, info.value.code) == (400, "unsupported_feature")
        with pytest.raises(InvalidRequest, match="embeddings"):
            await engine.embed(EmbeddingRequest(model="remote", inputs=["x"]))
    finally:
        await engine.aclose()
    assert upstreams[0].requests == []


def test_config_validates_urls() -> None:
    with pytest.raises(ValueError, match="http"):
        UpstreamModelConfig(id="m", engine="openai", upstreams=["gpu1:8000"])
    with pytest.raises(ValueError, match="api_key_env"):
        UpstreamModelConfig(id="m", engine="openai", upstreams=["http://user:pw@gpu1:8000/v1"])
    config = UpstreamModelConfig(id="m", engine="ollama", upstreams=["http://ws1:11434/api/"])
    assert config.upstreams == ["http://ws1:11434"] and config.remote_name == "m"
    assert config.capabilities == ["chat", "completions", "fim"]


async def test_the_service_fetches_whole_answers_in_one_upstream_call(upstreams: list[ScriptedUpstream],
                                                                     tmp_path) -> None:  # type: ignore[no-untyped-def]
    from garrison.service import InferenceService
    from garrison.settings import load_settings

    up = upstreams[0]
    settings = load_settings(home=tmp_path, default_model=False, engine={"embeddings": False}, models=[
        {"id": "remote", "engine": "openai", "upstreams": [up.openai_base], "upstream_model": "up-model"}])
    service = InferenceService.from_settings(settings)
    try:
        result = await service.complete(_chat(stream=True))
        first, rest = await service.start(_chat(stream=True))
        streamed = [first, *[e async for e in rest]]
    finally:
        await service.aclose()
    assert result.text == "Hello!" and result.usage.completion_tokens == 3
    assert [body["stream"] for _, body, _ in up.requests] == [False, True]
    assert "".join(e.text for e in streamed if isinstance(e, TokenDelta)) == "Hello!"


async def test_a_cookie_an_upstream_sets_never_rides_on_later_requests(upstreams: list[ScriptedUpstream]) -> None:
    upstream = upstreams[0]
    # a host name, not an IP: aiohttp's default jar would keep this cookie and send it on every request after
    engine = _engine([upstream.openai_base.replace("127.0.0.1", "localhost")])
    try:
        upstream.script.status, upstream.script.error_body = 400, {"error": {"message": "bad"}}
        upstream.script.headers = {"Set-Cookie": "session=caller-a; Path=/"}
        with pytest.raises(InvalidRequest):
            await _collect(engine, _chat())
        upstream.script.status, upstream.script.headers = 200, {}
        await _collect(engine, _chat())
    finally:
        await engine.aclose()
    assert len(upstream.requests) == 2
    assert "Cookie" not in upstream.requests[1][2]
