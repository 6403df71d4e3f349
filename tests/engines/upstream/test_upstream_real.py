"""The upstream engines against real engines on loopback: llama_cpp.server and a second `garrison serve`.

Run with the model lock: `flock /tmp/garrison-model.lock pytest tests/engines/upstream/test_upstream_real.py`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from peers import GarrisonPeer, LlamaCppServer
from scripted_upstream import generate_all

from garrison.domain import ChatMessage, EmbeddingRequest, GenerationRequest, SamplingParams
from garrison.engines.upstream.config import UpstreamModelConfig
from garrison.engines.upstream.engine import UpstreamEngine, create_engine
from garrison.errors import GarrisonError, ModelNotFound, UpstreamUnavailable
from garrison.registry import embedded_model_path, sha256_file

pytestmark = pytest.mark.model
MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def llama_server() -> Iterator[LlamaCppServer]:
    server = LlamaCppServer().start()
    yield server  # type: ignore[misc]
    server.stop()


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GarrisonPeer]:
    server = GarrisonPeer(tmp_path_factory.mktemp("peer")).start()
    yield server  # type: ignore[misc]
    server.stop()


def _chat(stream: bool, max_tokens: int = 8) -> GenerationRequest:
    return GenerationRequest(model="remote", messages=[ChatMessage("user", "Say hello.")], stream=stream,
                             sampling=SamplingParams(max_tokens=max_tokens, temperature=0.0, seed=1))


@pytest.fixture
async def engines() -> AsyncIterator[list[UpstreamEngine]]:
    made: list[UpstreamEngine] = []
    yield made
    for engine in made:
        await engine.aclose()


def _make(engines: list[UpstreamEngine], **fields: Any) -> UpstreamEngine:
    engine = create_engine(UpstreamModelConfig(id="remote", **{"health": {"interval": 0}, **fields}))
    engines.append(engine)
    return engine


async def test_llama_cpp_server_as_an_openai_upstream(llama_server: LlamaCppServer, engines) -> None:  # type: ignore[no-untyped-def]
    engine = _make(engines, engine="openai", upstreams=[f"{llama_server.url}/v1"], upstream_model="up-model")
    streamed, done = await generate_all(engine, _chat(stream=True))
    whole, whole_done = await generate_all(engine, _chat(stream=False))
    assert len(streamed) >= 2  # relayed chunk by chunk
    assert "".join(streamed) == "".join(whole) and whole[0]  # greedy: the same text either way
    assert done.usage.completion_tokens == whole_done.usage.completion_tokens == 8
    assert done.finish_reason == "length" and whole_done.usage.prompt_tokens > 0
    prompt = GenerationRequest(model="remote", prompt="The capital of France is", raw=True, stream=False,
                               sampling=SamplingParams(max_tokens=4, temperature=0.0))
    text, _ = await generate_all(engine, prompt)
    assert "".join(text).strip()
    await engine.health.check_all()
    replica = engine.describe()["replicas"][0]
    assert replica["state"] == "healthy" and replica["revision"] is None  # it reports no revision
    pinned = _make(engines, engine="openai", upstreams=[f"{llama_server.url}/v1"], upstream_model="up-model",
                   revision="anything")
    with pytest.raises(UpstreamUnavailable, match="does not report a revision"):
        await generate_all(pinned, _chat(stream=True))


async def test_garrison_peer_as_an_openai_upstream(peer: GarrisonPeer, engines, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PEER_KEY", peer.key)
    engine = _make(engines, engine="openai", upstreams=[f"{peer.url}/v1"], upstream_model=MODEL,
                   api_key_env="PEER_KEY")
    streamed, done = await generate_all(engine, _chat(stream=True))
    whole, _ = await generate_all(engine, _chat(stream=False))
    assert len(streamed) >= 2 and "".join(streamed) == "".join(whole)
    assert done.usage.prompt_tokens > 0 and done.usage.completion_tokens == 8
    embedder = _make(engines, engine="openai", kind="embed", upstreams=[f"{peer.url}/v1"],
                     upstream_model="all-minilm-l6-v2", api_key_env="PEER_KEY")
    vectors = await embedder.embed(EmbeddingRequest(model="remote", inputs=["a cat", "a dog"]))
    assert len(vectors.vectors) == 2 and vectors.vectors[0] != vectors.vectors[1]
    missing = _make(engines, engine="openai", upstreams=[f"{peer.url}/v1"], upstream_model="no-such-model",
                    api_key_env="PEER_KEY")
    with pytest.raises(ModelNotFound, match="remote"):
        await generate_all(missing, _chat(stream=False))
    monkeypatch.setenv("PEER_KEY", "gk-dev-wrong")
    wrong = _make(engines, engine="openai", upstreams=[f"{peer.url}/v1"], upstream_model=MODEL,
                  api_key_env="PEER_KEY")
    with pytest.raises(UpstreamUnavailable, match="credentials") as info:
        await generate_all(wrong, _chat(stream=True))
    assert "gk-dev-wrong" not in info.value.message


async def test_garrison_peer_as_an_ollama_upstream_pinned_by_digest(peer: GarrisonPeer, engines, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PEER_KEY", peer.key)
    digest = sha256_file(embedded_model_path())
    engine = _make(engines, engine="ollama", upstreams=[peer.url], upstream_model=MODEL, api_key_env="PEER_KEY",
                   revision=f"sha256:{digest}")
    streamed, done = await generate_all(engine, _chat(stream=True))
    whole, _ = await generate_all(engine, _chat(stream=False))
    assert len(streamed) >= 2 and "".join(streamed) == "".join(whole)
    assert done.usage.completion_tokens == 8 and done.timings.eval_ns > 0
    raw = GenerationRequest(model="remote", prompt="1, 2, 3,", raw=True, stream=True,
                            sampling=SamplingParams(max_tokens=4, temperature=0.0))
    assert "".join((await generate_all(engine, raw))[0]).strip()
    assert engine.describe()["replicas"][0]["revision"] == digest
    drifted = _make(engines, engine="ollama", upstreams=[peer.url], upstream_model=MODEL, api_key_env="PEER_KEY",
                    revision="sha256:" + "0" * 64)
    with pytest.raises(UpstreamUnavailable, match="pins"):
        await generate_all(drifted, _chat(stream=False))


async def _poll(condition, what: str, deadline_s: float = 90) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_kill_9_one_replica_under_load(tmp_path: Path, engines) -> None:  # type: ignore[no-untyped-def]
    first = GarrisonPeer(tmp_path / "a", no_auth=True).start()
    second = GarrisonPeer(tmp_path / "b", no_auth=True)
    try:
        second.start()
        engine = _make(engines, engine="openai", upstreams=[f"{first.url}/v1", f"{second.url}/v1"],
                       upstream_model=MODEL, eject_after=2, eject_for=2.0, health={"interval": 0.25, "timeout": 2.0})
        await _run_kill_test(engine, first)
    finally:
        first.stop()
        second.stop()


async def _run_kill_test(engine: UpstreamEngine, first: GarrisonPeer) -> None:
    ok: list[str] = []
    failed: list[BaseException] = []
    stop = asyncio.Event()
    dead, live = engine.router.replicas

    async def client() -> None:
        while not stop.is_set():
            try:
                await generate_all(engine, _chat(stream=False, max_tokens=2))
                ok.append("ok")
            except GarrisonError as exc:
                failed.append(exc)

    workers = [asyncio.create_task(client()) for _ in range(4)]
    try:
        await _poll(lambda: dead.requests > 2 and live.requests > 2, "both replicas serving")
        first.kill9()
        served = len(ok)
        await _poll(lambda: dead.state in ("ejected", "unhealthy"), "the dead replica ejected")
        await _poll(lambda: len(ok) > served + 20, "requests served by the survivor")
        first.start()  # back on the same port
        readmitted_at = dead.requests
        await _poll(lambda: dead.state == "healthy", "the replica readmitted")
        await _poll(lambda: dead.requests > readmitted_at + 2, "requests routed to it again")
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert failed == []  # zero failed non-streamed requests across the kill, the ejection and the return
