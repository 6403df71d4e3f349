"""Synthetic prompts of real text at a target size, JSONL datasets, and seeded repeatability."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from garrison.bench.config import BenchConfig
from garrison.bench.corpus import SENTENCES
from garrison.bench.prompts import INSTRUCTION, PromptSource, estimate_tokens, load_dataset
from garrison.errors import InvalidRequest


def config(**overrides: object) -> BenchConfig:
    return BenchConfig(url="http://127.0.0.1:1", model="m", **overrides)  # type: ignore[arg-type]


def text_of(source: PromptSource, index: int) -> str:
    return str(source.get(index).messages[0]["content"])


def test_synthetic_prompts_are_real_text_near_the_target_size() -> None:
    source = PromptSource(config(input_tokens=256, output_tokens=32), stream=1)
    for i in range(5):
        prompt = source.get(i)
        text = text_of(source, i)
        assert text.startswith(INSTRUCTION)
        assert any(sentence in text for sentence in SENTENCES)
        assert 0.9 * 256 <= prompt.estimated_input_tokens <= 256
        assert prompt.max_tokens == 32
    assert len({text_of(source, i) for i in range(20)}) == 20


def test_same_seed_same_prompts_and_streams_differ() -> None:
    first = PromptSource(config(seed=7), stream=1)
    again = PromptSource(config(seed=7), stream=1)
    other_stream = PromptSource(config(seed=7), stream=2)
    other_seed = PromptSource(config(seed=8), stream=1)
    assert [text_of(first, i) for i in range(4)] == [text_of(again, i) for i in range(4)]
    assert text_of(first, 0) != text_of(other_stream, 0)
    assert text_of(first, 0) != text_of(other_seed, 0)


def test_spread_varies_lengths_around_the_mean() -> None:
    source = PromptSource(config(output_tokens=100, output_spread=20, input_tokens=200, input_spread=40), 1)
    outputs = [source.get(i).max_tokens for i in range(300)]
    inputs = [source.get(i).estimated_input_tokens for i in range(300)]
    assert 90 <= statistics.mean(outputs) <= 110
    assert 14 <= statistics.stdev(outputs) <= 26
    assert statistics.stdev(inputs) > 20
    assert min(outputs) >= 1


def test_estimate_tokens_is_about_four_characters_a_token() -> None:
    assert estimate_tokens("x" * 400) == 100
    assert estimate_tokens("") == 1


def test_dataset_prompts_and_messages(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    lines = [
        {"prompt": "Say hello.", "max_tokens": 5},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n", encoding="utf-8")
    rows = load_dataset(path)
    assert rows[0] == ([{"role": "user", "content": "Say hello."}], 5)
    assert rows[1][0][0]["role"] == "system" and rows[1][1] is None
    source = PromptSource(config(dataset=path, output_tokens=9), stream=1, dataset=rows)
    prompts = [source.get(i) for i in range(4)]
    assert sorted(p.max_tokens for p in prompts[:2]) == [5, 9]
    assert prompts[2] == prompts[0] and prompts[3] == prompts[1]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not JSON"),
        ('{"other": 1}', "needs a 'prompt'"),
        ('{"prompt": "x", "max_tokens": 0}', "max"),
    ],
)
def test_dataset_errors_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "fine"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(InvalidRequest, match=f"bad.jsonl:2.*{message}"):
        load_dataset(path)
