"""The documents index: its own SQLite file (documents, chunks, FTS5 keywords) and a numpy vector matrix.

Every search runs in one read snapshot and takes an `AccessFilter`: the keyword query filters chunks by
collection and label rank in its WHERE clause, and the vector scan multiplies only the matrix rows of the
allowed collections up to the allowed rank (rows are kept sorted by collection, then rank, so each allowed
collection is one contiguous slice). Rows above the caller's clearance are never scored, so a top-k is
always filled from what the caller may see. Hybrid ranking fuses both lists by reciprocal rank.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from garrison.security.principal import CLEARANCES
from garrison.store import Store

Mode = Literal["hybrid", "keyword", "vector"]
RRF_K = 60  # the constant of reciprocal rank fusion (Cormack et al. 2009)
_WORD = re.compile(r"\w+", re.UNICODE)
# English function words: they match nearly every chunk, cost the most to rank and carry no meaning.
STOPWORDS = frozenset(
    "a an and are as at be but by can could did do does for from had has have how i if in into is it its may me "
    "my no not of on or our should so than that the their them then there these they this to was we were what "
    "when where which who whom why will with would you your".split()
)


@dataclass(frozen=True, slots=True)
class AccessFilter:
    """What a caller may see: these collections, labels up to `max_rank` (0 public ... 3 restricted)."""

    collections: tuple[str, ...]
    max_rank: int

    @classmethod
    def of(cls, collections: Sequence[str], clearance: str) -> AccessFilter:
        return cls(tuple(sorted(set(collections))), CLEARANCES.index(clearance))


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    """A document as the index holds it."""

    id: str
    collection: str
    path: str
    kind: str
    title: str
    label: str
    label_source: str
    size: int
    sha256: str
    pages: int | None
    chunks: int
    ingested_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ChunkRow:
    """A chunk to store: its position, text and vector."""

    ordinal: int
    page: int | None
    heading: str | None
    text: str


@dataclass(frozen=True, slots=True)
class Hit:
    """A retrieved chunk with its document's identity and label, and its fused score."""

    chunk_id: int
    document_id: str
    collection: str
    title: str
    path: str
    kind: str
    page: int | None
    heading: str | None
    label: str
    text: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DocumentIndex:
    """Documents and chunks in SQLite (one transaction per document), searched under an AccessFilter."""

    def __init__(self, path: Path, *, dimensions: int = 384) -> None:
        self.store = Store(path, migrations="garrison.documents")
        self.dimensions = dimensions
        self._vectors = _VectorMatrix(dimensions)

    def close(self) -> None:
        self.store.close()

    # -- writes ---------------------------------------------------------------------------------------------

    def put(self, record: DocumentRecord, chunks: Sequence[ChunkRow], vectors: np.ndarray) -> None:
        """Replace a document and all its chunks atomically: the old version or the new one, never a mix."""
        if vectors.shape != (len(chunks), self.dimensions):
            raise ValueError(f"expected {len(chunks)} vectors of {self.dimensions} dimensions, got {vectors.shape}")
        rank = CLEARANCES.index(record.label)
        blobs = np.ascontiguousarray(vectors, dtype="<f4")
        with self.store.transaction() as conn:
            self._delete(conn, record.id)
            conn.execute(
                "INSERT INTO documents (id, collection, path, kind, title, label, label_rank, label_source, size, "
                "sha256, pages, chunks, ingested_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.id, record.collection, record.path, record.kind, record.title, record.label, rank,
                 record.label_source, record.size, record.sha256, record.pages, len(chunks), record.ingested_at),
            )
            conn.executemany(
                "INSERT INTO chunks (document_id, collection, label_rank, ordinal, page, heading, title, text, vector)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (record.id, record.collection, rank, c.ordinal, c.page, c.heading, record.title, c.text,
                     blobs[i].tobytes())
                    for i, c in enumerate(chunks)
                ],
            )
            conn.execute("DELETE FROM exclusions WHERE collection = ? AND path = ?", (record.collection, record.path))

    def delete(self, document_id: str, *, exclude: bool = False) -> bool:
        """Remove a document and its chunks; `exclude` also keeps later syncs from adding it back."""
        with self.store.transaction() as conn:
            row = conn.execute("SELECT collection, path FROM documents WHERE id = ?", (document_id,)).fetchone()
            if row is None:
                return False
            self._delete(conn, document_id)
            if exclude:
                conn.execute(
                    "INSERT INTO exclusions (collection, path, excluded_at) VALUES (?, ?, "
                    "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) ON CONFLICT (collection, path) DO NOTHING",
                    (row["collection"], row["path"]),
                )
        return True

    def relabel(self, document_id: str, label: str, *, source: str = "manual") -> None:
        """Give a document a new label (by hand, or the catalogue's); its chunks move with it in one transaction."""
        rank = CLEARANCES.index(label)
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE documents SET label = ?, label_rank = ?, label_source = ? WHERE id = ?",
                (label, rank, source, document_id),
            )
            conn.execute("UPDATE chunks SET label_rank = ? WHERE document_id = ?", (rank, document_id))

    def readmit(self, collection: str | None = None) -> int:
        """Forget exclusions (of one collection, or all) so the next sync indexes those files again."""
        if collection is None:
            return self.store.execute("DELETE FROM exclusions")
        return self.store.execute("DELETE FROM exclusions WHERE collection = ?", (collection,))

    @staticmethod
    def _delete(conn: sqlite3.Connection, document_id: str) -> None:
        conn.execute("DELETE FROM chunks WHERE document_id = ?", (document_id,))
        conn.execute("DELETE FROM documents WHERE id = ?", (document_id,))

    # -- reads ----------------------------------------------------------------------------------------------

    def get(self, document_id: str) -> DocumentRecord | None:
        row = self.store.fetchone("SELECT * FROM documents WHERE id = ?", (document_id,))
        return _record(row) if row else None

    def find(self, collection: str, path: str) -> DocumentRecord | None:
        row = self.store.fetchone("SELECT * FROM documents WHERE collection = ? AND path = ?", (collection, path))
        return _record(row) if row else None

    def documents(self, access: AccessFilter | None = None, collection: str | None = None) -> list[DocumentRecord]:
        """Documents in path order; with `access`, only those it allows."""
        where, params = ["1 = 1"], []
        if access is not None:
            where.append(f"label_rank <= ? AND collection IN ({_marks(access.collections)})")
            params += [access.max_rank, *access.collections]
        if collection is not None:
            where.append("collection = ?")
            params.append(collection)
        sql = f"SELECT * FROM documents WHERE {' AND '.join(where)} ORDER BY collection, path"
        return [_record(r) for r in self.store.fetchall(sql, params)]

    def excluded(self, collection: str) -> set[str]:
        rows = self.store.fetchall("SELECT path FROM exclusions WHERE collection = ?", (collection,))
        return {r["path"] for r in rows}

    def chunks_of(self, document_id: str) -> list[dict[str, Any]]:
        rows = self.store.fetchall(
            "SELECT id, ordinal, page, heading, text FROM chunks WHERE document_id = ? ORDER BY ordinal",
            (document_id,),
        )
        return [dict(r) for r in rows]

    def catalogue_version(self) -> int:
        """The version of the shared catalogue this index was last reconciled with."""
        row = self.store.fetchone("SELECT catalogue_version FROM index_state WHERE id = 1")
        return int(row[0]) if row else 0

    def set_catalogue_version(self, version: int) -> None:
        self.store.execute("UPDATE index_state SET catalogue_version = ? WHERE id = 1", (version,))

    def chunk_count(self) -> int:
        row = self.store.fetchone("SELECT COUNT(*) FROM chunks")
        return int(row[0]) if row else 0

    # -- search ---------------------------------------------------------------------------------------------

    def search(
        self, text: str, vector: np.ndarray | None, access: AccessFilter, k: int, mode: Mode = "hybrid"
    ) -> list[Hit]:
        """The top `k` chunks for a query among those `access` allows, in one consistent read snapshot."""
        if k < 1 or not access.collections:
            return []
        depth = max(4 * k, 40)
        with self._snapshot() as conn:
            ranked: list[list[int]] = []
            if mode in ("hybrid", "keyword"):
                ranked.append(self._keyword(conn, text, access, depth))
            if mode in ("hybrid", "vector") and vector is not None:
                ranked.append(self._vector(conn, vector, access, depth))
            fused = _fuse(ranked)[:k]
            return self._hits(conn, fused, access)

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        conn = self.store.connection()
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    @staticmethod
    def _keyword(conn: sqlite3.Connection, text: str, access: AccessFilter, limit: int) -> list[int]:
        query = fts_query(text)
        if not query:
            return []
        rows = conn.execute(
            "SELECT c.id FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid "
            f"WHERE chunks_fts MATCH ? AND c.label_rank <= ? AND c.collection IN ({_marks(access.collections)}) "
            "ORDER BY bm25(chunks_fts, 2.0, 1.5, 1.0) LIMIT ?",
            (query, access.max_rank, *access.collections, limit),
        ).fetchall()
        return [int(r[0]) for r in rows]

    def _vector(self, conn: sqlite3.Connection, vector: np.ndarray, access: AccessFilter, limit: int) -> list[int]:
        generation = int(conn.execute("SELECT generation FROM index_state WHERE id = 1").fetchone()[0])
        view = self._vectors.view(conn, generation)
        return view.top(np.asarray(vector, dtype=np.float32), access, limit)

    @staticmethod
    def _hits(conn: sqlite3.Connection, fused: list[tuple[int, float]], access: AccessFilter) -> list[Hit]:
        if not fused:
            return []
        ids = [chunk_id for chunk_id, _ in fused]
        rows = conn.execute(  # the access filter again: defence in depth against any stale in-memory state
            "SELECT c.id, c.document_id, c.page, c.heading, c.text, d.collection, d.title, d.path, d.kind, d.label "
            f"FROM chunks c JOIN documents d ON d.id = c.document_id WHERE c.id IN ({_marks(ids)}) "
            f"AND c.label_rank <= ? AND d.label_rank <= ? AND c.collection IN ({_marks(access.collections)})",
            (*ids, access.max_rank, access.max_rank, *access.collections),
        ).fetchall()
        by_id = {int(r["id"]): r for r in rows}
        hits = []
        for chunk_id, score in fused:
            r = by_id.get(chunk_id)
            if r is not None:
                hits.append(
                    Hit(chunk_id, r["document_id"], r["collection"], r["title"], r["path"], r["kind"], r["page"],
                        r["heading"], r["label"], r["text"], round(score, 6))
                )
        return hits


def fts_query(text: str, max_terms: int = 32) -> str:
    """A safe FTS5 query: the text's words (stop words dropped), each quoted (no operator injection), OR-ed."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))
    kept = [w for w in words if w not in STOPWORDS] or words
    return " OR ".join(f'"{w}"' for w in kept[:max_terms])


def _fuse(ranked: list[list[int]]) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of ranked id lists (a single list keeps its order)."""
    scores: dict[int, float] = {}
    for ids in ranked:
        for rank, chunk_id in enumerate(ids, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values)


def _record(row: sqlite3.Row) -> DocumentRecord:
    return DocumentRecord(
        row["id"], row["collection"], row["path"], row["kind"], row["title"], row["label"], row["label_source"],
        row["size"], row["sha256"], row["pages"], row["chunks"], row["ingested_at"],
    )


@dataclass(frozen=True, slots=True)
class _View:
    """An immutable snapshot of the matrix: rows sorted by (collection, rank, id) and each collection's spans."""

    generation: int
    ids: np.ndarray
    matrix: np.ndarray
    spans: dict[str, np.ndarray]  # collection -> row offsets where ranks 0..3 start, plus its end

    def top(self, vector: np.ndarray, access: AccessFilter, limit: int) -> list[int]:
        scores: list[np.ndarray] = []
        rows: list[np.ndarray] = []
        for collection in access.collections:
            bounds = self.spans.get(collection)
            if bounds is None:
                continue
            start, end = int(bounds[0]), int(bounds[min(access.max_rank, 3) + 1])
            if end <= start:
                continue
            part = self.matrix[start:end] @ vector  # only rows this caller may see are ever scored
            keep = min(limit, len(part))
            best = np.argpartition(-part, keep - 1)[:keep]
            scores.append(part[best])
            rows.append(best + start)
        if not scores:
            return []
        all_scores, all_rows = np.concatenate(scores), np.concatenate(rows)
        order = np.lexsort((self.ids[all_rows], -all_scores))[:limit]
        return [int(i) for i in self.ids[all_rows[order]]]


class _VectorMatrix:
    """The process's float32 copy of every chunk vector, refreshed when the index generation moves.

    Vectors never change for a chunk id (a changed document gets new chunks), so a refresh reads only the
    (id, collection, rank) of every chunk plus the vectors of chunks newer than the newest it holds.
    """

    def __init__(self, dimensions: int) -> None:
        self._dimensions = dimensions
        self._lock = threading.Lock()
        self._view = _View(-1, np.zeros(0, np.int64), np.zeros((0, dimensions), np.float32), {})

    def view(self, conn: sqlite3.Connection, generation: int) -> _View:
        view = self._view
        if view.generation == generation:
            return view
        with self._lock:
            if self._view.generation != generation:
                self._view = self._rebuild(conn, generation, self._view)
            return self._view

    def _rebuild(self, conn: sqlite3.Connection, generation: int, old: _View) -> _View:
        meta = conn.execute("SELECT id, collection, label_rank FROM chunks").fetchall()
        n = len(meta)
        ids = np.fromiter((r[0] for r in meta), np.int64, n)
        ranks = np.fromiter((r[2] for r in meta), np.int64, n)
        names = sorted({r[1] for r in meta})
        code = {name: i for i, name in enumerate(names)}
        codes = np.fromiter((code[r[1]] for r in meta), np.int64, n)
        matrix = np.empty((n, self._dimensions), np.float32)
        newest = int(old.ids.max()) if len(old.ids) else 0
        known = ids <= newest
        if known.any():
            by_id = np.argsort(old.ids)
            where = by_id[np.searchsorted(old.ids, ids[known], sorter=by_id)]
            matrix[known] = old.matrix[where]
        if (~known).any():
            fresh = conn.execute("SELECT id, vector FROM chunks WHERE id > ? ORDER BY id", (newest,)).fetchall()
            fresh_ids = np.fromiter((r[0] for r in fresh), np.int64, len(fresh))
            fresh_vectors = np.frombuffer(b"".join(r[1] for r in fresh), dtype="<f4").reshape(-1, self._dimensions)
            matrix[~known] = fresh_vectors[np.searchsorted(fresh_ids, ids[~known])]
        order = np.lexsort((ids, ranks, codes))
        ids, ranks, codes, matrix = ids[order], ranks[order], codes[order], matrix[order]
        spans: dict[str, np.ndarray] = {}
        for name, i in code.items():
            lo, hi = np.searchsorted(codes, i, "left"), np.searchsorted(codes, i, "right")
            starts = lo + np.searchsorted(ranks[lo:hi], np.arange(4), "left")
            spans[name] = np.append(starts, hi)
        return _View(generation, ids, np.ascontiguousarray(matrix), spans)
