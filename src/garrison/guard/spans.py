"""What a detector reports: typed spans of text, and the detector shape streaming redaction relies on."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Span:
    """One sensitive value found in a text: where it is, its type (EMAIL, JWT, ...) and the value itself."""

    start: int
    end: int
    type: str
    value: str

    def __len__(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Detector:
    """Finds one family of spans; `max_span` and `tail` bound what a stream must hold back for it.

    `tail` matches the characters a match of this detector may end with (anchored at the end of the text):
    while the text ends in such a run, a match could still be growing there.
    """

    kind: str  # "pii" or "secrets"
    types: tuple[str, ...]
    find: Callable[[str], Iterator[Span]]
    max_span: int
    tail: re.Pattern[str]


def resolve_overlaps(spans: Iterable[Span]) -> list[Span]:
    """Keep the longest span where spans overlap (earliest first on ties), in text order."""
    chosen: list[Span] = []
    for span in sorted(spans, key=lambda s: (-(s.end - s.start), s.start)):
        if all(span.end <= c.start or span.start >= c.end for c in chosen):
            chosen.append(span)
    return sorted(chosen, key=lambda s: s.start)


def scan(text: str, detectors: Iterable[Detector], types: frozenset[str] | None = None) -> list[Span]:
    """Every non-overlapping span the detectors find (only `types` when given), in text order."""
    found: list[Span] = []
    for detector in detectors:
        if types is not None and not types.intersection(detector.types):
            continue
        found.extend(s for s in detector.find(text) if types is None or s.type in types)
    return resolve_overlaps(found)


def open_tail(text: str, detectors: Iterable[Detector]) -> int:
    """How many trailing characters of `text` could still be part of a match that more text would extend."""
    hold = 0
    for detector in detectors:
        match = detector.tail.search(text)
        if match:
            hold = max(hold, min(detector.max_span, match.end() - match.start()))
    return hold
