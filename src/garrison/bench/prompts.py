"""Prompts to send: synthetic real-text prompts of a target length, or a JSONL dataset; seeded."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from garrison.bench.config import BenchConfig
from garrison.bench.corpus import SENTENCES
from garrison.errors import InvalidRequest

CHARS_PER_TOKEN = 4.0
INSTRUCTION = (
    "Continue the passage below in the same plain style, and keep writing until you are stopped.\n\n"
)


def estimate_tokens(text: str) -> int:
    """Rough token count of English text (~4 characters a token) for when the server reports no usage."""
    return max(1, round(len(text) / CHARS_PER_TOKEN))


@dataclass(frozen=True)
class Prompt:
    """One request's input: chat messages, the output length asked for, and an input-size estimate."""

    messages: list[dict[str, Any]]
    max_tokens: int
    estimated_input_tokens: int


class SentenceDeck:
    """The corpus dealt in shuffled rounds, so consecutive prompts start differently and rarely repeat."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._order: list[str] = []

    def deal(self) -> str:
        """The next sentence; reshuffles when the deck runs out."""
        if not self._order:
            self._order = list(SENTENCES)
            self._rng.shuffle(self._order)
        return self._order.pop()


def synthetic_text(target_tokens: int, deck: SentenceDeck) -> str:
    """Real sentences from `deck` until the text (instruction included) reaches about `target_tokens`."""
    target_chars = max(1, int(target_tokens * CHARS_PER_TOKEN) - len(INSTRUCTION))
    parts: list[str] = []
    length = 0
    while length < target_chars:
        sentence = deck.deal()
        parts.append(sentence)
        length += len(sentence) + 1
    text = " ".join(parts)
    if len(text) > target_chars:
        cut = text.rfind(" ", 0, target_chars)
        text = text[: cut if cut > 0 else target_chars]
    return INSTRUCTION + text


def _draw(rng: random.Random, mean: int, spread: float) -> int:
    if spread <= 0:
        return mean
    return max(1, round(rng.gauss(mean, spread)))


def load_dataset(path: Path) -> list[tuple[list[dict[str, Any]], int | None]]:
    """Read JSONL lines of {"prompt": str} or {"messages": [...]}, each with optional "max_tokens"."""
    rows: list[tuple[list[dict[str, Any]], int | None]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidRequest(f"--dataset {where}: not JSON ({exc.msg})", param="--dataset") from None
            if not isinstance(item, dict):
                raise InvalidRequest(f"--dataset {where}: each line must be a JSON object", param="--dataset")
            messages = item.get("messages")
            prompt = item.get("prompt", item.get("text"))
            if isinstance(messages, list) and messages and all(isinstance(m, dict) for m in messages):
                chat = messages
            elif isinstance(prompt, str) and prompt:
                chat = [{"role": "user", "content": prompt}]
            else:
                raise InvalidRequest(
                    f"--dataset {where}: needs a 'prompt' string or 'messages' list", param="--dataset"
                )
            limit = item.get("max_tokens", item.get("output_tokens"))
            if limit is not None and (not isinstance(limit, int) or limit < 1):
                raise InvalidRequest(
                    f"--dataset {where}: max_tokens must be a positive integer", param="--dataset"
                )
            rows.append((chat, limit))
    if not rows:
        raise InvalidRequest(f"--dataset {path}: no prompts in the file", param="--dataset")
    return rows


def _message_text(messages: list[dict[str, Any]]) -> str:
    texts: list[str] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "\n".join(texts)


class PromptSource:
    """A repeatable, endless sequence of prompts for one level (same seed and stream, same prompts)."""

    def __init__(
        self,
        config: BenchConfig,
        stream: int,
        dataset: list[tuple[list[dict[str, Any]], int | None]] | None = None,
    ) -> None:
        self._config = config
        self._rng = random.Random(f"{config.seed}:{stream}")
        self._deck = SentenceDeck(self._rng)
        self._dataset = list(dataset) if dataset else None
        if self._dataset:
            self._rng.shuffle(self._dataset)
        self._made: list[Prompt] = []

    def get(self, index: int) -> Prompt:
        """The `index`-th prompt of this stream (prompts are made in order, so any access is repeatable)."""
        while len(self._made) <= index:
            self._made.append(self._next())
        return self._made[index]

    def _next(self) -> Prompt:
        config = self._config
        if self._dataset:
            messages, limit = self._dataset[len(self._made) % len(self._dataset)]
            max_tokens = limit or _draw(self._rng, config.output_tokens, config.output_spread)
            return Prompt(messages, max_tokens, estimate_tokens(_message_text(messages)))
        target = _draw(self._rng, config.input_tokens, config.input_spread)
        text = synthetic_text(target, self._deck)
        max_tokens = _draw(self._rng, config.output_tokens, config.output_spread)
        return Prompt([{"role": "user", "content": text}], max_tokens, estimate_tokens(text))
