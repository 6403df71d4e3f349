"""Chunks: paragraphs packed up to a word budget inside one section, so each keeps its page and heading."""

from __future__ import annotations

import re
from dataclasses import dataclass

from garrison.documents.parsers import ParsedDocument

MAX_WORDS = 150  # ~200 word pieces: inside all-MiniLM-L6-v2's 256-token window with the title prepended
OVERLAP_WORDS = 30  # words repeated between the windows of one long paragraph
_PARAGRAPH = re.compile(r"\n\s*\n")


@dataclass(frozen=True, slots=True)
class Chunk:
    """One retrievable passage and where it sits in its document."""

    ordinal: int
    text: str
    page: int | None
    heading: str | None


def chunk_document(doc: ParsedDocument, *, max_words: int = MAX_WORDS, overlap: int = OVERLAP_WORDS) -> list[Chunk]:
    """Split every section into chunks of at most `max_words` words; chunks never span two sections."""
    chunks: list[Chunk] = []
    for section in doc.sections:
        for text in _pack(section.text, max_words, overlap):
            chunks.append(Chunk(len(chunks), text, section.page, section.heading))
    return chunks


def _pack(text: str, max_words: int, overlap: int) -> list[str]:
    out: list[str] = []
    current: list[str] = []
    size = 0
    for paragraph in _PARAGRAPH.split(text):
        words = paragraph.split()
        if not words:
            continue
        if len(words) > max_words:
            if current:
                out.append("\n\n".join(current))
                current, size = [], 0
            step = max(1, max_words - overlap)
            for start in range(0, len(words), step):
                out.append(" ".join(words[start : start + max_words]))
                if start + max_words >= len(words):
                    break
            continue
        if size + len(words) > max_words and current:
            out.append("\n\n".join(current))
            current, size = [], 0
        current.append(" ".join(words))
        size += len(words)
    if current:
        out.append("\n\n".join(current))
    return out


def embedding_text(title: str, heading: str | None, text: str) -> str:
    """What is embedded for a chunk: its title and heading give short passages their context."""
    return "\n".join(part for part in (title, heading, text) if part)
