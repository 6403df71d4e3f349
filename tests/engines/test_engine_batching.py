"""Continuous batching in the embedded engine: answers never depend on who else is in the batch.

Everything runs against the session's one real server (one llama engine per process); engine-level checks
drive that server's own engine object on a private event loop, HTTP checks use the openai SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jsonschema
import pytest
from openai import AsyncOpenAI
from tests.conftest import TEST_THREADS

from garrison.domain import GenerationDone, GenerationRequest, GenerationStarted, SamplingParams, TokenDelta
from garrison.engines import cpu
from garrison.engines.llama import PROMPT_ROWS_PER_STEP
from processes import ServerProcess, clean_env, free_port

MODEL = "smollm2-135m-instruct"

pytestmark = pytest.mark.model

TOPICS = ["a lighthouse", "a bakery", "the moon", "a river", "a violin", "a glacier", "a market", "an owl"]


def engine_of(live_server: Any) -> Any:
    return live_server.app.state.inference.engine(MODEL)


def async_client(live_server: Any) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=live_server.openai_base, api_key=live_server.api_key or "unused",
                       max_retries=0, timeout=300)


def wait_for(predicate: Callable[[], bool], what: str, limit_s: float = 120.0) -> None:
    """Poll until the engine reaches a state (its thread applies changes between decode steps)."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, f"engine never reached: {what}"
        time.sleep(0.05)


class Scripted:
    """Stands in for the decode loop's thread governor: thread counts from a list, one per round, in turn."""

    def __init__(self, counts: list[int]) -> None:
        self.counts = counts
        self.used: list[int] = []
        self.switches = 0  # read by the engine's metrics

    def threads(self) -> int:
        n = self.counts[len(self.used) % len(self.counts)]
        self.used.append(n)
        return n


@contextlib.contextmanager
def governed(engine: Any, governor: Scripted) -> Iterator[Scripted]:
    """Let `governor` choose the engine's threads per round; the server's own governor afterwards."""
    loop = engine._loop
    original = loop.governor
    loop.governor = governor
    try:
        yield governor
    finally:
        loop.governor = original if original is not None else Scripted([engine.threads])


async def complete(client: AsyncOpenAI, prompt: str, **options: Any) -> tuple[str, str, Any]:
    reply = await client.completions.create(model=MODEL, prompt=prompt, **options)
    return reply.choices[0].text, reply.choices[0].finish_reason, reply.usage


def test_eight_concurrent_requests_answer_exactly_as_alone(live_server) -> None:
    """Greedy and seeded requests, decoded together, return what each returns on its own."""
    greedy, seeded = {"temperature": 0.0}, {"temperature": 0.9}
    requests = [
        (f"Here is a short story about {topic}:", greedy if i % 2 else {**seeded, "seed": i})
        for i, topic in enumerate(TOPICS)
    ]

    async def run() -> tuple[list[str], list[str], dict[str, int], dict[str, int]]:
        client = async_client(live_server)
        common = {"max_tokens": 24, "extra_body": {"ignore_eos": True}}
        alone = [(await complete(client, p, **o, **common))[0] for p, o in requests]
        before = engine_of(live_server).metrics()
        together = await asyncio.gather(*[complete(client, p, **o, **common) for p, o in requests])
        after = engine_of(live_server).metrics()
        await client.close()
        return alone, [text for text, _, _ in together], before, after

    alone, together, before, after = asyncio.run(run())
    assert together == alone
    generated = after["tokens_generated_total"] - before["tokens_generated_total"]
    steps = after["decode_steps_total"] - before["decode_steps_total"]
    assert generated == 8 * 24
    assert steps < generated  # sequences shared decode steps: they were batched, not queued one by one


def test_grammar_and_stop_strings_hold_under_concurrency(live_server) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 24}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    json_format = {"type": "json_schema", "json_schema": {"name": "pet", "schema": schema}}

    async def pet(client: AsyncOpenAI, i: int) -> tuple[str, str]:
        reply = await client.chat.completions.create(
            model=MODEL, max_tokens=80, temperature=0.7, seed=i, response_format=json_format,  # type: ignore[arg-type]
            messages=[{"role": "user", "content": f"Describe {TOPICS[i]}'s pet as JSON with name and age."}],
        )
        return reply.choices[0].message.content or "", reply.choices[0].finish_reason

    async def count(client: AsyncOpenAI, start: int) -> tuple[str, str]:
        prompt = ", ".join(str(n) for n in range(start, start + 5)) + ","
        text, finish, _ = await complete(client, prompt, temperature=0, max_tokens=24, stop=[f" {start + 8}"])
        return text, finish

    async def run() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        client = async_client(live_server)
        calls = [lambda i=i: pet(client, i) for i in range(4)]
        calls += [lambda s=s: count(client, s) for s in (1, 20, 40, 70)]
        alone = [await call() for call in calls]
        together = list(await asyncio.gather(*[call() for call in calls]))
        await client.close()
        return alone, together

    alone, together = asyncio.run(run())
    assert together == alone
    for text, finish in together[:4]:
        assert finish == "stop"
        jsonschema.validate(json.loads(text), schema)
    for (text, finish), start in zip(together[4:], (1, 20, 40, 70), strict=True):
        assert finish == "stop"
        assert f" {start + 7}" in text and str(start + 8) not in text


def test_prefix_reused_answer_equals_cold_answer(live_server) -> None:
    """A prompt sharing a long prefix with a cached one skips its prefill and answers identically."""
    prefix = f"Notes {uuid.uuid4().hex}:\n" + " ".join(
        f"Item {n}: the {TOPICS[n % 8].split()[-1]} was checked on day {n}." for n in range(24)
    )
    first = prefix + "\nQuestion: which item was a river?"
    second = prefix + "\nQuestion: which item was an owl?"
    metrics_before = engine_of(live_server).metrics()

    async def run() -> list[tuple[str, str, Any]]:
        client = async_client(live_server)
        options = {"temperature": 0, "max_tokens": 16}
        results = [await complete(client, p, **options) for p in (second, first, second)]
        await client.close()
        return results

    (cold, _, cold_usage), (_, _, first_usage), (warm, _, warm_usage) = asyncio.run(run())
    shared = first_usage.prompt_tokens - 12  # everything but the differing question
    assert cold_usage.prompt_tokens_details.cached_tokens == 0
    assert first_usage.prompt_tokens_details.cached_tokens >= shared
    assert warm_usage.prompt_tokens_details.cached_tokens >= shared
    assert warm == cold
    metrics = engine_of(live_server).metrics()
    assert metrics["prefix_cache_hits_total"] >= metrics_before["prefix_cache_hits_total"] + 2
    assert metrics["prefix_cache_tokens_total"] >= metrics_before["prefix_cache_tokens_total"] + 2 * shared


def test_prefix_of_a_running_sequence_is_copied_and_answers_identically(live_server) -> None:
    """While one request still generates, another with the same long prefix reuses its KV by copy."""
    prefix = f"Log {uuid.uuid4().hex}:\n" + " ".join(f"Entry {n} reads {n * 7 % 13}." for n in range(60))
    probe = prefix + "\nThe entry with the largest reading is"
    engine = engine_of(live_server)

    async def greedy(client: AsyncOpenAI) -> tuple[str, list[float], Any]:
        reply = await client.completions.create(model=MODEL, prompt=probe, temperature=0, max_tokens=12, logprobs=1)
        choice = reply.choices[0]
        assert choice.logprobs is not None and choice.logprobs.token_logprobs
        return choice.text, list(choice.logprobs.token_logprobs), reply.usage

    async def run() -> tuple[tuple[str, list[float], Any], tuple[str, list[float], Any]]:
        client = async_client(live_server)
        padded_before = engine.metrics()["padded_steps_total"]
        cold = await greedy(client)  # alone: one-token steps past LONE_STEP_CELLS, padded when threads > 1
        if engine.cache_type_k == "bf16":  # the per-row kernel at every shape: nothing to pad
            assert engine.metrics()["padded_steps_total"] == padded_before
        elif engine.metrics()["slots"] > 1 and TEST_THREADS > 1:
            assert engine.metrics()["padded_steps_total"] > padded_before
        long_stream = await client.completions.create(
            model=MODEL, prompt=prefix + "\nA summary:", temperature=0, max_tokens=400, stream=True,
            extra_body={"ignore_eos": True},
        )
        chunks = long_stream.__aiter__()
        await anext(chunks)  # the long request is admitted and generating
        warm = await greedy(client)  # decoded beside the long stream: two streams in every step
        assert engine.metrics()["running"] >= 1  # the source sequence was still running during the copy
        await long_stream.close()
        await client.close()
        return cold, warm

    with governed(engine, Scripted([TEST_THREADS])):  # padding is asserted for 2+ threads
        (cold_text, cold_logprobs, cold_usage), (warm_text, warm_logprobs, warm_usage) = asyncio.run(run())
    assert cold_usage.prompt_tokens_details.cached_tokens == 0
    assert warm_usage.prompt_tokens_details.cached_tokens > 64
    assert warm_text == cold_text
    assert warm_logprobs == cold_logprobs  # bit-exact: the same per-row attention path either way


def test_switching_threads_between_steps_changes_no_bit(live_server) -> None:
    """The governor may change the thread count at any step: a long lone answer keeps every bit."""
    prompt = f"Log {uuid.uuid4().hex}:\n" + " ".join(f"Entry {n} reads {n * 5 % 11}." for n in range(60))
    prompt += "\nThe entries with a reading of 3 are"
    engine = engine_of(live_server)

    async def greedy() -> tuple[str, list[float]]:
        async with async_client(live_server) as client:
            reply = await client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=24,
                                                    logprobs=1, extra_body={"ignore_eos": True})
        assert reply.usage is not None and reply.usage.prompt_tokens > 300  # lone steps past 256 KV cells
        logprobs = reply.choices[0].logprobs
        assert logprobs is not None and logprobs.token_logprobs
        return reply.choices[0].text, list(logprobs.token_logprobs)

    answers = {}
    for name, counts in {"two": [2], "alternating": [1, 2, 2, 1, 2], "one": [1]}.items():
        padded_before = engine.metrics()["padded_steps_total"]
        with governed(engine, Scripted(counts)) as governor:
            answers[name] = asyncio.run(greedy())
        assert set(governor.used) == set(counts)
        if engine.cache_type_k == "bf16":
            assert engine.metrics()["padded_steps_total"] == padded_before  # exact without padding rows
        elif name == "two" and engine.metrics()["slots"] > 1:
            assert engine.metrics()["padded_steps_total"] > padded_before  # the padding row kept it exact
    assert answers["alternating"] == answers["two"] == answers["one"]


def test_greedy_argmax_picks_what_llama_cpps_sampler_picks(live_server, monkeypatch) -> None:
    """Greedy chains take numpy's argmax instead of llama.cpp's sampler: same tokens, logprobs, end-token bans."""
    import garrison.engines.llama as llama_engine

    built = llama_engine.build_sampler
    fast: list[bool] = []
    native = {"on": False}

    def spy(*args: Any, **kwargs: Any) -> Any:
        chain = built(*args, **kwargs)
        fast.append(chain._argmax is not None)
        if native["on"]:
            chain._argmax = None  # llama.cpp's own greedy sampler and logit bias
        return chain

    monkeypatch.setattr(llama_engine, "build_sampler", spy)

    async def answers() -> list[tuple[str, list[float]]]:
        async with async_client(live_server) as client:
            results = []
            for prompt, extra in (("Reply with one word: yes or no?", {"ignore_eos": True}),
                                  ("Reply with one word: yes or no?", {}), ("Count: one, two, three,", {})):
                reply = await client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=16,
                                                        logprobs=2, extra_body=extra)
                logprobs = reply.choices[0].logprobs
                assert logprobs is not None
                results.append((reply.choices[0].text, list(logprobs.token_logprobs or [])))
            return results

    with_argmax = asyncio.run(answers())
    native["on"] = True
    with_native = asyncio.run(answers())
    assert fast == [True] * 6
    assert with_argmax == with_native
    assert len(with_argmax[1][1]) < 16  # without ignore_eos the end token comes first ...
    assert len(with_argmax[0][1]) == 16  # ... with it, the end token was banned and the next best taken
    assert len(with_argmax[2][1]) == 16


def test_without_batch_invariance_a_prompt_goes_in_whole(live_server, tmp_path) -> None:
    """Exact answers cut prompts into steps of at most 63 rows; `batch_invariant = false` prefills in one step."""
    def prompt() -> str:
        return f"Note {uuid.uuid4().hex}: " + " ".join(f"Item {n} weighs {n * 3 % 17} grams." for n in range(14))

    engine = engine_of(live_server)
    before = engine.metrics()["decode_steps_total"]
    with httpx.Client(base_url=live_server.openai_base, timeout=120) as client:
        reply = client.post("/completions", json={"model": MODEL, "prompt": prompt(), "max_tokens": 1},
                            headers={"Authorization": f"Bearer {live_server.api_key}"} if live_server.api_key else {})
    assert 2 * PROMPT_ROWS_PER_STEP < reply.json()["usage"]["prompt_tokens"] < 3 * PROMPT_ROWS_PER_STEP
    assert engine.metrics()["decode_steps_total"] - before == 3  # 63 + 63 + the rest

    port = free_port()
    cmd = [sys.executable, "-m", "garrison", "serve", "--no-auth", "--host", "127.0.0.1", "--port", str(port),
           "--home", str(tmp_path / "home"), "--no-embeddings", "--threads", str(TEST_THREADS)]
    server = ServerProcess(cmd, f"http://127.0.0.1:{port}/health", "garrison without batch invariance",
                           env=clean_env(GARRISON_ENGINE__BATCH_INVARIANT="false")).start()
    try:
        base = f"http://127.0.0.1:{port}"

        def steps() -> float:
            text = httpx.get(f"{base}/metrics", timeout=30).text
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("garrison_engine_decode_steps_total{"))

        before_steps = steps()
        reply = httpx.post(f"{base}/v1/completions", json={"model": MODEL, "prompt": prompt(), "max_tokens": 1},
                           timeout=120)
        assert reply.status_code == 200 and reply.json()["usage"]["prompt_tokens"] > 2 * PROMPT_ROWS_PER_STEP
        assert steps() - before_steps == 1
    finally:
        server.stop()


@pytest.mark.skipif(TEST_THREADS < 2, reason="one thread never takes the split kernel: nothing is padded")
def test_with_f16_keys_a_lone_long_step_is_padded_and_answers_as_beside_another(live_server, tmp_path) -> None:
    """f16 keys and values send a lone one-token step past 512 cells to ggml's split-KV kernel; the padding row
    keeps such answers bit-identical to the same answer decoded beside another sequence."""
    assert engine_of(live_server).cache_type_k == cpu.key_cache_type("auto", on_gpu=False)
    prompt = f"Log {uuid.uuid4().hex}:\n" + " ".join(f"Entry {n} reads {n * 7 % 13}." for n in range(60))
    prompt += "\nThe entry with the largest reading is"
    port = free_port()
    cmd = [sys.executable, "-m", "garrison", "serve", "--no-auth", "--host", "127.0.0.1", "--port", str(port),
           "--home", str(tmp_path / "home"), "--no-embeddings", "--threads", str(TEST_THREADS)]
    server = ServerProcess(cmd, f"http://127.0.0.1:{port}/health", "garrison with f16 keys",
                           env=clean_env(GARRISON_ENGINE__CACHE_TYPE_K="f16",
                                         GARRISON_ENGINE__ADAPTIVE_THREADS="false")).start()
    base = f"http://127.0.0.1:{port}"

    def padded() -> float:
        text = httpx.get(f"{base}/metrics", timeout=30).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("garrison_engine_padded_steps_total{"))

    def greedy() -> list[float]:
        reply = httpx.post(f"{base}/v1/completions", timeout=120, json={
            "model": MODEL, "prompt": prompt, "max_tokens": 12, "temperature": 0, "logprobs": 1})
        assert reply.status_code == 200 and reply.json()["usage"]["prompt_tokens"] > 300
        return list(reply.json()["choices"][0]["logprobs"]["token_logprobs"])

    try:
        before = padded()
        alone = greedy()
        assert padded() > before  # lone steps past 256 cells carried a padding row
        long = {"model": MODEL, "prompt": prompt + "\nA summary:", "max_tokens": 400, "temperature": 0,
                "stream": True, "ignore_eos": True}
        with httpx.stream("POST", f"{base}/v1/completions", json=long, timeout=120) as stream:
            next(stream.iter_lines())  # the long request is admitted and generating
            beside = greedy()  # two streams in every step: the per-row kernel
        assert beside == alone
    finally:
        server.stop()


@pytest.mark.skipif(TEST_THREADS < 2, reason="one thread leaves nothing to govern")
def test_a_busy_neighbour_makes_the_server_use_fewer_threads(live_server) -> None:
    """The live server's own governor: beside a CPU-bound process its steps run on half the threads."""
    engine = engine_of(live_server)
    governor = engine._loop.governor
    assert governor is not None and governor.fewest < governor.most
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with httpx.Client(base_url=live_server.openai_base, timeout=120) as client:
            headers = {"Authorization": f"Bearer {live_server.api_key}"} if live_server.api_key else {}
            deadline = time.monotonic() + 60
            while not (engine.metrics()["threads"] == governor.fewest and governor.others > 0.5):
                assert time.monotonic() < deadline, f"threads {engine.metrics()['threads']}, others {governor.others}"
                reply = client.post("/completions", headers=headers, json={
                    "model": MODEL, "prompt": "Count: one, two,", "max_tokens": 32, "temperature": 0})
                assert reply.status_code == 200
    finally:
        hog.kill()
        hog.wait()


def test_cancellation_frees_slots_and_queue_places(live_server) -> None:
    """Closing running streams and abandoning queued ones leaves no running or waiting sequence behind."""
    engine = engine_of(live_server)
    slots = engine.metrics()["slots"]

    def request(i: int) -> GenerationRequest:
        return GenerationRequest(model=MODEL, prompt=f"Chapter {i}. It was a dark night and",
                                 sampling=SamplingParams(max_tokens=1000, temperature=0, ignore_eos=True))

    async def first_event(stream: Any) -> Any:
        """The first generated event (GenerationStarted, the counted prompt, comes before any slot)."""
        event = await anext(stream)
        return await anext(stream) if isinstance(event, GenerationStarted) else event

    async def run() -> GenerationDone:
        streams = [engine.generate(request(i)) for i in range(slots + 2)]
        for stream in streams[:slots]:
            assert isinstance(await first_event(stream), TokenDelta)
        queued = [asyncio.create_task(first_event(stream)) for stream in streams[slots:]]
        await asyncio.to_thread(wait_for, lambda: engine.metrics()["waiting"] == 2, "two requests queued")
        assert engine.metrics()["running"] == slots
        for task in queued:
            task.cancel()
        await asyncio.gather(*queued, return_exceptions=True)
        for stream in streams[:slots]:
            await stream.aclose()
        await asyncio.to_thread(
            wait_for, lambda: engine.metrics()["running"] == 0 and engine.metrics()["waiting"] == 0,
            "no running or waiting sequences",
        )
        events = [event async for event in engine.generate(GenerationRequest(
            model=MODEL, prompt="After the storm,", sampling=SamplingParams(max_tokens=8, temperature=0)))]
        done = events[-1]
        assert isinstance(done, GenerationDone)
        return done

    done = asyncio.run(run())
    assert done.usage.completion_tokens >= 1
    metrics = engine.metrics()
    assert metrics["running"] == 0 and metrics["waiting"] == 0
    assert 0 < metrics["kv_cells_used"] <= metrics["kv_cells_total"]


def test_running_stream_keeps_generating_while_long_prompts_prefill(live_server) -> None:
    """Long prompts are prefilled in bounded chunks: a running stream gets a token from every step of them."""
    engine = engine_of(live_server)
    budget = live_server.settings.engine.prefill_budget
    prompts = [f"{topic.title()} log. " + " ".join(f"Line {n}: {topic} stood still at dawn." for n in range(45))
               for topic in TOPICS[:4]]

    async def first_token(prompt: str) -> int:
        events = [event async for event in engine.generate(GenerationRequest(
            model=MODEL, prompt=prompt, sampling=SamplingParams(max_tokens=1, temperature=0)))]
        done = events[-1]
        assert isinstance(done, GenerationDone) and done.usage.cached_tokens == 0
        return done.usage.prompt_tokens

    async def run() -> tuple[int, int]:
        running = engine.generate(GenerationRequest(
            model=MODEL, prompt="Once upon a time", sampling=SamplingParams(max_tokens=1500, temperature=0,
                                                                            ignore_eos=True)))
        assert isinstance(await anext(running), GenerationStarted)
        assert isinstance(await anext(running), TokenDelta)
        arrived = asyncio.Event()
        during = 0

        async def consume() -> None:
            nonlocal during
            async for event in running:
                if arrived.is_set():
                    return
                if isinstance(event, TokenDelta):
                    during += event.tokens

        consumer = asyncio.create_task(consume())
        prompt_tokens = sum(await asyncio.gather(*[first_token(prompt) for prompt in prompts]))
        arrived.set()
        await consumer
        await running.aclose()
        return during, prompt_tokens

    during, prompt_tokens = asyncio.run(run())
    rows_per_step = min(budget, len(prompts) * PROMPT_ROWS_PER_STEP)
    assert prompt_tokens > 4 * rows_per_step
    # the running stream gets one token per step of the prefill (at most rows_per_step prompt rows each),
    # give or take the steps the prompts were admitted in
    assert during >= prompt_tokens // rows_per_step - 3
