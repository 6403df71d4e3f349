"""Ingest one document: check size and kind, parse, label, chunk, embed, then store it in one transaction."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from garrison.documents.chunking import Chunk, chunk_document, embedding_text
from garrison.documents.index import ChunkRow, DocumentIndex, DocumentRecord
from garrison.documents.parsers import kind_of, parse
from garrison.documents.roots import Root
from garrison.errors import PayloadTooLarge
from garrison.store.times import to_iso

Embed = Callable[[list[str]], np.ndarray]
"""Texts -> L2-normalised float32 vectors, one row per text (the served embedding model)."""


def document_id(secret: bytes, collection: str, path: str) -> str:
    """The document's identifier: HMAC-SHA256 under the server secret of its collection and path."""
    digest = hmac.new(secret, f"{collection}\x00{path}".encode(), hashlib.sha256).hexdigest()
    return f"doc_{digest[:24]}"


@dataclass(frozen=True, slots=True)
class Prepared:
    """A parsed, chunked and embedded document, ready to be stored in one transaction."""

    record: DocumentRecord
    chunks: list[Chunk]
    vectors: np.ndarray


def check_size(size: int, limit: int, name: str) -> None:
    if size > limit:
        raise PayloadTooLarge(
            f"'{PurePosixPath(name).name}' is {size} bytes; documents.max_file_bytes allows {limit}", param="file"
        )


def prepare(
    data: bytes,
    root: Root,
    relative: str,
    *,
    secret: bytes,
    embed: Embed,
    max_bytes: int,
    label: str | None = None,
    label_source: str = "upload",
) -> Prepared:
    """Everything but the write: 413 over the size limit, 415 for an unknown kind, 422 when unreadable.

    The label is `label` when given (an upload's, or a manual one kept across edits), else the file's own
    (Markdown front matter `classification:`), else the root's.
    """
    check_size(len(data), max_bytes, relative)
    kind_of(relative)
    parsed = parse(data, relative)
    chunks = chunk_document(parsed)
    if label is not None:
        effective, source = label, label_source
    elif parsed.label is not None:
        effective, source = parsed.label, "front_matter"
    else:
        effective, source = root.label, "root"
    vectors = embed([embedding_text(parsed.title, c.heading, c.text) for c in chunks])
    record = DocumentRecord(
        id=document_id(secret, root.collection, relative),
        collection=root.collection,
        path=relative,
        kind=parsed.kind,
        title=parsed.title,
        label=effective,
        label_source=source,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        pages=parsed.pages,
        chunks=len(chunks),
        ingested_at=to_iso(time.time()),
    )
    return Prepared(record, chunks, vectors)


def store(index: DocumentIndex, prepared: Prepared) -> None:
    """Write a prepared document: the old version or the new one is visible, never part of either."""
    rows = [ChunkRow(c.ordinal, c.page, c.heading, c.text) for c in prepared.chunks]
    index.put(prepared.record, rows, prepared.vectors)
