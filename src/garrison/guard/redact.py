"""Typed placeholders ([EMAIL_1]) in place of sensitive spans, their rehydration, and both on streams.

A stream is redacted while it flows: each delta is released except the trailing characters that a match
could still be growing into (`open_tail`, bounded by the detectors' longest span), so a secret is never
half-emitted and ordinary text is held back by at most the length of the word being written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from garrison.guard.spans import Detector, Span, open_tail, scan

PLACEHOLDER = re.compile(r"\[([A-Z][A-Z_]*?)_(\d{1,6})\]")
_MAX_PLACEHOLDER = 32  # "[" + type + "_" + number + "]"
_CONTEXT = 64  # emitted characters kept so keyword-anchored patterns ("Bearer ...") still see their keyword


@dataclass
class Vault:
    """One request's placeholders: the same value always gets the same placeholder; originals stay here."""

    originals: dict[str, str] = field(default_factory=dict)  # placeholder -> original
    _by_value: dict[tuple[str, str], str] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=dict)
    rehydratable: set[str] = field(default_factory=set)  # placeholders of the caller's own input

    def placeholder(self, span: Span, *, rehydrate: bool) -> str:
        key = (span.type, span.value)
        token = self._by_value.get(key)
        if token is None:
            number = self._counts.get(span.type, 0) + 1
            self._counts[span.type] = number
            token = f"[{span.type}_{number}]"
            self._by_value[key] = token
            self.originals[token] = span.value
        if rehydrate:
            self.rehydratable.add(token)
        return token

    def rehydrate(self, text: str) -> str:
        """Put the caller's originals back in place of their placeholders (others stay as they are)."""
        if "[" not in text:
            return text
        return PLACEHOLDER.sub(
            lambda m: self.originals[m.group()] if m.group() in self.rehydratable else m.group(), text
        )


def apply(text: str, spans: Sequence[Span], replace: Callable[[Span], str]) -> str:
    """`text` with each (non-overlapping, ordered) span replaced."""
    if not spans:
        return text
    parts, last = [], 0
    for span in spans:
        parts.append(text[last:span.start])
        parts.append(replace(span))
        last = span.end
    parts.append(text[last:])
    return "".join(parts)


def redact(text: str, spans: Sequence[Span], vault: Vault, *, rehydrate: bool = False) -> str:
    """Replace each span with its typed placeholder, remembering the original in `vault`."""
    return apply(text, spans, lambda s: vault.placeholder(s, rehydrate=rehydrate))


class StreamRedactor:
    """Redacts text arriving in pieces; `feed` returns what is safe to emit now, `flush` the rest at the end."""

    def __init__(
        self, detectors: Sequence[Detector], types: frozenset[str] | None, replace: Callable[[Span], str]
    ) -> None:
        self._detectors = detectors
        self._types = types
        self._replace = replace  # a span's replacement: a placeholder, or its own value to keep it
        self._context = ""  # the end of what was already emitted (never part of a match)
        self._pending = ""

    def feed(self, delta: str) -> str:
        self._pending += delta
        return self._release(final=False)

    def flush(self) -> str:
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        text = self._context + self._pending
        offset = len(self._context)
        spans = [s for s in scan(text, self._detectors, self._types) if s.end > offset]
        cut = len(text) if final else len(text) - open_tail(text, self._detectors)
        cut = max(cut, offset)
        done = [s for s in spans if s.end <= cut]
        for s in spans:  # a match reaching past the cut is held whole
            if s.end > cut and s.start < cut:
                cut = max(offset, s.start)
        done = [s for s in done if s.end <= cut]
        out, last = [], offset
        for span in done:
            start = max(span.start, offset)
            out.append(text[last:start])
            out.append(self._replace(span))
            last = span.end
        out.append(text[last:cut])
        released = "".join(out)
        self._pending = text[cut:]
        self._context = (self._context + text[offset:cut])[-_CONTEXT:]
        return released


class StreamRehydrator:
    """Restores the caller's placeholders in a stream, holding back only an unfinished '[TYPE_N' piece."""

    def __init__(self, vault: Vault) -> None:
        self._vault = vault
        self._pending = ""

    def feed(self, delta: str) -> str:
        text = self._pending + delta
        cut = text.rfind("[")
        if cut >= 0 and "]" not in text[cut:] and len(text) - cut < _MAX_PLACEHOLDER:
            self._pending = text[cut:]
            text = text[:cut]
        else:
            self._pending = ""
        return self._vault.rehydrate(text)

    def flush(self) -> str:
        text, self._pending = self._pending, ""
        return self._vault.rehydrate(text)
