"""The shared documents catalogue (in the store: SQLite or PostgreSQL) and the reconciliation of a local index.

What is shared by every gateway on one store: which documents are indexed (id, collection, path), each one's
label and where it came from, its content digest, size, pages, chunk count, when it was ingested, and the
exclusions (documents an operator removed while their file stays). What stays per gateway: the search index
(`documents.db`: chunks, FTS5 keywords, vectors), a cache derived from the storage roots by sync.

Every change to the catalogue bumps one version counter and stamps the changed row with it; a removed
document stays as a tombstone (`removed = 1`). Before each search a gateway reads the counter (one indexed
read) and, when it moved, applies the rows changed since to its local index: a relabel or a removal made on
any gateway is honoured by every other from its next search, without a sync. Content is not copied: a
gateway whose local copy has another digest than the catalogue's keeps it under the higher of the two
labels until its own sync re-ingests the file.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Concatenate, ParamSpec, TypeVar

from garrison.documents.index import AccessFilter, DocumentIndex, DocumentRecord
from garrison.errors import StoreUnavailable
from garrison.security.principal import CLEARANCES
from garrison.store import Store
from garrison.store.times import to_iso

log = logging.getLogger(__name__)

_FIELDS = ("id", "collection", "path", "kind", "title", "label", "label_rank", "label_source", "size", "sha256",
           "pages", "chunks", "ingested_at")
_P = ParamSpec("_P")
_T = TypeVar("_T")


def _shared(method: Callable[Concatenate[Catalogue, _P], _T]) -> Callable[Concatenate[Catalogue, _P], _T]:
    """The store unreachable (a shared PostgreSQL's outage) is a 503 `store_unavailable`, never a 500."""

    @functools.wraps(method)
    def call(self: Catalogue, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        store = self.store
        try:
            return method(self, *args, **kwargs)
        except store.errors as exc:
            if not store.is_outage(exc):
                raise
            raise StoreUnavailable("the documents catalogue (the store) is unreachable; try again shortly") from exc

    return call


_COMPARED = ("collection", "path", "kind", "title", "label", "label_source", "size", "sha256", "pages", "chunks")


class Catalogue:
    """The documents' shared records on the store; every write is one store transaction that bumps the version."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- reads ----------------------------------------------------------------------------------------------

    @_shared
    def version(self) -> int:
        row = self.store.fetchone("SELECT version FROM document_catalogue_state WHERE id = 1")
        return int(row[0]) if row else 0

    @_shared
    def get(self, document_id: str) -> DocumentRecord | None:
        row = self.store.fetchone("SELECT * FROM document_catalogue WHERE id = ? AND removed = 0", (document_id,))
        return _record(row) if row else None

    @_shared
    def find(self, collection: str, path: str) -> DocumentRecord | None:
        row = self.store.fetchone(
            "SELECT * FROM document_catalogue WHERE collection = ? AND path = ? AND removed = 0", (collection, path)
        )
        return _record(row) if row else None

    @_shared
    def documents(self, access: AccessFilter | None = None, collection: str | None = None) -> list[DocumentRecord]:
        """Documents (not removed) in path order; with `access`, only those it allows."""
        where, params = ["removed = 0"], []
        if access is not None:
            if not access.collections:
                return []
            where.append(f"label_rank <= ? AND collection IN ({', '.join('?' for _ in access.collections)})")
            params += [access.max_rank, *access.collections]
        if collection is not None:
            where.append("collection = ?")
            params.append(collection)
        sql = f"SELECT * FROM document_catalogue WHERE {' AND '.join(where)} ORDER BY collection, path"
        return [_record(r) for r in self.store.fetchall(sql, params)]

    @_shared
    def changes(self, since: int) -> list[tuple[DocumentRecord, bool]]:
        """Every row changed after version `since`, as (record, removed), oldest change first."""
        rows = self.store.fetchall("SELECT * FROM document_catalogue WHERE version > ? ORDER BY version", (since,))
        return [(_record(r), bool(r["removed"])) for r in rows]

    @_shared
    def excluded(self, collection: str) -> set[str]:
        rows = self.store.fetchall("SELECT path FROM document_exclusions WHERE collection = ?", (collection,))
        return {r["path"] for r in rows}

    # -- writes ---------------------------------------------------------------------------------------------

    @_shared
    def publish(self, record: DocumentRecord) -> DocumentRecord:
        """Record a document as indexed; returns what the catalogue now holds.

        A label set by hand (on any gateway) stays: a sync publishing the file's own label does not replace
        it. An unchanged record writes nothing, so gateways syncing the same roots do not move the version.
        """
        with self.store.transaction() as conn:
            row = conn.execute("SELECT * FROM document_catalogue WHERE id = ?", (record.id,)).fetchone()
            if row is not None and not row["removed"] and row["label_source"] == "manual" \
                    and record.label_source != "manual":
                record = replace(record, label=row["label"], label_source="manual")
            if row is not None and not row["removed"] and all(row[f] == getattr(record, f) for f in _COMPARED):
                return _record(row)
            version = _bump(conn)
            values = _values(record)
            conn.execute(
                f"INSERT INTO document_catalogue ({', '.join(_FIELDS)}, removed, version) "
                f"VALUES ({', '.join('?' for _ in _FIELDS)}, 0, ?) ON CONFLICT (id) DO UPDATE SET "
                + ", ".join(f"{f} = excluded.{f}" for f in _FIELDS if f != "id")
                + ", removed = 0, version = excluded.version",
                (*values, version),
            )
            conn.execute("DELETE FROM document_exclusions WHERE collection = ? AND path = ?",
                         (record.collection, record.path))
        return record

    @_shared
    def relabel(self, document_id: str, label: str) -> DocumentRecord | None:
        """Set a document's label by hand (source 'manual'); None when the catalogue has no such document."""
        with self.store.transaction() as conn:
            row = conn.execute("SELECT * FROM document_catalogue WHERE id = ? AND removed = 0",
                               (document_id,)).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE document_catalogue SET label = ?, label_rank = ?, label_source = 'manual', version = ? "
                "WHERE id = ?",
                (label, CLEARANCES.index(label), _bump(conn), document_id),
            )
        return replace(_record(row), label=label, label_source="manual")

    @_shared
    def remove(self, record: DocumentRecord, *, exclude: bool = False) -> None:
        """Mark a document removed (a tombstone other gateways apply); `exclude` keeps every sync from re-adding it."""
        with self.store.transaction() as conn:
            row = conn.execute("SELECT removed FROM document_catalogue WHERE id = ?", (record.id,)).fetchone()
            if row is None:  # never published here: a tombstone still tells other gateways to drop their copy
                conn.execute(
                    f"INSERT INTO document_catalogue ({', '.join(_FIELDS)}, removed, version) "
                    f"VALUES ({', '.join('?' for _ in _FIELDS)}, 1, ?)",
                    (*_values(record), _bump(conn)),
                )
            elif not row["removed"]:
                conn.execute("UPDATE document_catalogue SET removed = 1, version = ? WHERE id = ?",
                             (_bump(conn), record.id))
            if exclude:
                conn.execute(
                    "INSERT INTO document_exclusions (collection, path, excluded_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (collection, path) DO NOTHING",
                    (record.collection, record.path, to_iso(time.time())),
                )


class Reconciler:
    """Keeps one gateway's local index in line with the catalogue's labels and removals."""

    def __init__(self, catalogue: Catalogue, index: DocumentIndex) -> None:
        self.catalogue = catalogue
        self.index = index
        self._lock = threading.Lock()

    def reconcile(self) -> int:
        """Apply the catalogue's changes since the last reconcile; returns how many local documents changed.

        The store unreachable (an outage of a shared PostgreSQL): the local index serves as last reconciled,
        which is the catalogue as it was when this gateway last read it (no change can be made meanwhile).
        """
        try:
            version = self.catalogue.version()
            if version == self.index.catalogue_version():
                return 0
            with self._lock:
                applied = self.index.catalogue_version()
                if version == applied:
                    return 0
                # a catalogue older than what this index saw is another database: compare everything
                changes = self.catalogue.changes(applied if applied < version else 0)
                changed = sum(self._apply(record, removed) for record, removed in changes)
                self.index.set_catalogue_version(version)
                return changed
        except StoreUnavailable:
            log.warning("documents catalogue unreachable; searching the local index as last reconciled")
            return 0

    def _apply(self, shared: DocumentRecord, removed: bool) -> bool:
        local = self.index.get(shared.id)
        if local is None:
            return False
        if removed:
            return self.index.delete(shared.id)
        if local.sha256 == shared.sha256:
            label, source = shared.label, shared.label_source
        else:  # another version of the content: never lower the label the local copy was indexed with
            label = max(shared.label, local.label, key=CLEARANCES.index)
            source = shared.label_source if label == shared.label else local.label_source
        if (label, source) == (local.label, local.label_source):
            return False
        self.index.relabel(shared.id, label, source=source)
        return True


def _bump(conn: Any) -> int:
    conn.execute("UPDATE document_catalogue_state SET version = version + 1 WHERE id = 1")
    return int(conn.execute("SELECT version FROM document_catalogue_state WHERE id = 1").fetchone()[0])


def _values(record: DocumentRecord) -> Sequence[Any]:
    return (record.id, record.collection, record.path, record.kind, record.title, record.label,
            CLEARANCES.index(record.label), record.label_source, record.size, record.sha256, record.pages,
            record.chunks, record.ingested_at)


def _record(row: Any) -> DocumentRecord:
    return DocumentRecord(
        row["id"], row["collection"], row["path"], row["kind"], row["title"], row["label"], row["label_source"],
        row["size"], row["sha256"], row["pages"], row["chunks"], row["ingested_at"],
    )
