"""Tool calls, n choices, logprobs and token-id prompts on the real embedded engine (SmolLM2-135M).

The 135M model makes poor choices: these tests assert structure (calls that parse and validate, the wire of
events, reproducible seeds, one prefill), never wisdom. They drive the session server's own engine.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import jsonschema
import llama_cpp
import numpy as np
import pytest

from garrison.domain import (
    ChatMessage,
    Completion,
    GenerationEvent,
    GenerationRequest,
    SamplingParams,
    TokenDelta,
    ToolCall,
    ToolCallEvent,
    ToolChoice,
    ToolSpec,
    collect,
)
from garrison.engines import cpu
from garrison.engines.tools import plan_tools
from garrison.errors import InvalidRequest

MODEL = "smollm2-135m-instruct"
pytestmark = pytest.mark.model

WEATHER = ToolSpec(
    name="get_weather", description="Get the current weather in a city",
    parameters={"type": "object",
                "properties": {"city": {"type": "string", "maxLength": 40},
                               "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                "required": ["city", "unit"], "additionalProperties": False},
)
ADD = ToolSpec(
    name="add", description="Add two integers",
    parameters={"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"]},
)
ASK = [ChatMessage("user", "What is the weather in Paris, in celsius?")]


def engine_of(live_server: Any) -> Any:
    return live_server.app.state.inference.engine(MODEL)


def run(engine: Any, req: GenerationRequest) -> tuple[Completion, list[GenerationEvent]]:
    async def go() -> list[GenerationEvent]:
        return [event async for event in engine.generate(req)]

    events = asyncio.run(go())
    return collect(req, events), events


def chat(choice: ToolChoice, *, tools: list[ToolSpec] | None = None, max_tokens: int = 96, **sampling: Any,
         ) -> GenerationRequest:
    return GenerationRequest(model=MODEL, messages=list(ASK), tools=tools or [WEATHER, ADD], tool_choice=choice,
                             sampling=SamplingParams(max_tokens=max_tokens, **{"temperature": 0.0, **sampling}))


def assert_valid(call: ToolCall, tools: list[ToolSpec]) -> None:
    spec = next(t for t in tools if t.name == call.name)
    jsonschema.validate(json.loads(call.arguments), spec.parameters)
    assert call.id.startswith("call_")


def test_required_calls_parse_and_validate(live_server) -> None:
    result, events = run(engine_of(live_server), chat(ToolChoice("required")))
    assert result.tool_calls, result.text
    for call in result.tool_calls:
        assert_valid(call, [WEATHER, ADD])
    assert result.text == ""  # the grammar leaves no room for prose
    assert result.finish_reason == "tool_calls"
    assert [e.index for e in events if isinstance(e, ToolCallEvent)] == list(range(len(result.tool_calls)))


def test_named_choice_calls_that_function_once(live_server) -> None:
    result, _ = run(engine_of(live_server), chat(ToolChoice("required", "add")))
    assert [c.name for c in result.tool_calls] == ["add"]
    assert_valid(result.tool_calls[0], [ADD])
    assert result.finish_reason == "tool_calls"


def test_parallel_calls_are_at_most_one_per_offered_tool_and_one_without_parallel(live_server) -> None:
    engine = engine_of(live_server)
    parallel, _ = run(engine, chat(ToolChoice("required")))
    assert 1 <= len(parallel.tool_calls) <= 2
    single = chat(ToolChoice("required"))
    single.parallel_tool_calls = False
    result, _ = run(engine, single)
    assert len(result.tool_calls) == 1


def test_auto_is_text_or_valid_calls_and_never_call_json_as_text(live_server) -> None:
    engine = engine_of(live_server)
    for seed in range(4):
        result, _ = run(engine, chat(ToolChoice("auto"), temperature=0.9, seed=seed))
        assert "<tool_call>" not in result.text and '"arguments"' not in result.text
        for call in result.tool_calls:
            assert_valid(call, [WEATHER, ADD])
        assert (result.finish_reason == "tool_calls") == bool(result.tool_calls) or result.finish_reason == "length"


def test_none_never_calls(live_server) -> None:
    engine = engine_of(live_server)
    for seed in range(3):
        result, events = run(engine, chat(ToolChoice("none"), temperature=0.9, seed=seed))
        assert not any(isinstance(e, ToolCallEvent) for e in events)
        assert "<tool_call>" not in result.text and result.finish_reason in ("stop", "length")


def test_a_two_turn_loop_sends_the_result_back(live_server) -> None:
    engine = engine_of(live_server)
    first, _ = run(engine, chat(ToolChoice("required", "add")))
    call = first.tool_calls[0]
    args = json.loads(call.arguments)
    history = [*ASK, ChatMessage("assistant", "", tool_calls=[call]),
               ChatMessage("tool", str(args["a"] + args["b"]), tool_call_id=call.id)]
    second = GenerationRequest(model=MODEL, messages=history, tools=[WEATHER, ADD], tool_choice=ToolChoice("none"),
                               sampling=SamplingParams(max_tokens=32, temperature=0.0))
    plan = plan_tools(engine.info, second)
    assert plan is not None
    result, _ = run(engine, second)
    assert result.text.strip() and not result.tool_calls


def test_the_tool_grammars_of_every_family_compile_in_llama_cpp(live_server) -> None:
    """Each family's grammar (strict and lazy) is accepted by llama.cpp's own GBNF parser."""
    from garrison.engines.sampling import build_sampler
    from garrison.engines.tools.families import FAMILIES, GENERIC
    from garrison.engines.tools.plan import ToolPlan

    engine = engine_of(live_server)
    for fmt in (*FAMILIES, GENERIC):
        for choice in (ToolChoice("auto"), ToolChoice("required"), ToolChoice("required", "add")):
            grammar = ToolPlan(fmt, fmt is not GENERIC, [WEATHER, ADD], choice, True).grammar()
            assert grammar is not None
            sampler = build_sampler(engine._vocab, engine._n_vocab, SamplingParams(temperature=0.0),
                                    grammar=grammar.text, eog_ids=engine._eog_ids, seed=1, triggers=grammar.triggers)
            sampler.close()


def test_n_choices_share_one_prefill_and_seeds_are_reproducible(live_server) -> None:
    engine = engine_of(live_server)
    prompt = [ChatMessage("user", "Write one sentence about a new colour nobody has seen.")]

    def ask(seed: int) -> GenerationRequest:
        return GenerationRequest(model=MODEL, messages=prompt, sampling=SamplingParams(
            max_tokens=16, temperature=1.0, seed=seed, n=3, ignore_eos=True))

    before = engine.metrics()
    first, events = run(engine, ask(7))
    after = engine.metrics()
    again, _ = run(engine, ask(7))
    assert [c.text for c in first.choices] == [c.text for c in again.choices]
    assert len({c.text for c in first.choices}) >= 2  # seed + i: distinct streams
    assert first.usage.completion_tokens == 48 and first.usage.prompt_tokens > 16
    prefilled = after["tokens_prefilled_total"] - before["tokens_prefilled_total"]
    assert prefilled <= first.usage.prompt_tokens  # one prefill for all three choices
    assert {e.choice for e in events if isinstance(e, TokenDelta)} == {0, 1, 2}
    single = GenerationRequest(model=MODEL, messages=prompt, sampling=SamplingParams(
        max_tokens=16, temperature=1.0, seed=8, ignore_eos=True))
    assert run(engine, single)[0].text == first.choices[1].text  # choice i samples with seed + i


def test_n_beyond_the_slots_is_a_400(live_server) -> None:
    engine = engine_of(live_server)
    with pytest.raises(InvalidRequest) as caught:
        run(engine, GenerationRequest(model=MODEL, prompt="x", sampling=SamplingParams(n=engine.n_slots + 1)))
    assert caught.value.param == "n"


def test_logprobs_are_the_models_distribution(live_server) -> None:
    engine = engine_of(live_server)
    req = GenerationRequest(model=MODEL, prompt="The capital of France is", sampling=SamplingParams(
        max_tokens=8, temperature=0.0, logprobs=True, top_logprobs=5, ignore_eos=True))
    result, _ = run(engine, req)
    logprobs = result.choices[0].logprobs or []
    assert len(logprobs) == 8
    assert "".join(lp.token for lp in logprobs) == result.text
    for lp in logprobs:
        assert lp.logprob <= 0.0 and len(lp.top) == 5
        assert [t.logprob for t in lp.top] == sorted((t.logprob for t in lp.top), reverse=True)
        assert sum(math.exp(t.logprob) for t in lp.top) <= 1.0 + 1e-5
        assert lp.top[0].token == lp.token and lp.top[0].logprob == pytest.approx(lp.logprob)  # greedy
    # The first token's number matches a log-softmax over llama.cpp's logits computed here independently.
    expected = _greedy_logprob(engine, engine.tokenize("The capital of France is", add_bos=True))
    assert logprobs[0].logprob == pytest.approx(expected, abs=1e-3)


def _greedy_logprob(engine: Any, tokens: list[int]) -> float:
    """log p of the likeliest next token, from a fresh llama.cpp context of the same model."""
    ctx_params = llama_cpp.llama_context_default_params()
    ctx_params.n_ctx = 256
    ctx_params.n_batch = 256
    ctx_params.type_k = cpu.GGML_TYPES[engine.cache_type_k]  # the engine's KV key type (bf16 on most CPUs)
    ctx = llama_cpp.llama_init_from_model(engine._model, ctx_params)
    try:
        ids = (llama_cpp.llama_token * len(tokens))(*tokens)  # kept alive: the batch points into it
        batch = llama_cpp.llama_batch_get_one(ids, len(tokens))
        assert llama_cpp.llama_decode(ctx, batch) == 0
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(engine._n_vocab,))
        logits = logits.astype(np.float64)
        return float(-math.log(np.exp(logits - logits.max()).sum()))
    finally:
        llama_cpp.llama_free(ctx)


def test_token_id_prompts_are_the_models_own_vocabulary(live_server) -> None:
    engine = engine_of(live_server)
    text = "Once upon a time"
    sampling = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    by_text, _ = run(engine, GenerationRequest(model=MODEL, prompt=text, raw=True, sampling=sampling))
    ids = engine.tokenize(text, add_bos=True)
    by_ids, _ = run(engine, GenerationRequest(model=MODEL, prompt_tokens=ids, raw=True, sampling=sampling))
    assert by_ids.text == by_text.text and by_ids.usage.prompt_tokens == len(ids)
    with pytest.raises(InvalidRequest) as caught:
        run(engine, GenerationRequest(model=MODEL, prompt_tokens=[100_000_000], sampling=sampling))
    assert "send the prompt as text" in caught.value.message
