"""The documents library: roots + index + embedder behind the operations the CLI, the API and the stage use."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from garrison.audit.log import AuditEvent, AuditLog
from garrison.documents import ingest
from garrison.documents.catalogue import Catalogue, Reconciler
from garrison.documents.index import AccessFilter, DocumentIndex, DocumentRecord, Hit, Mode
from garrison.documents.roots import Roots
from garrison.documents.sync import Progress, SyncReport, sync_roots
from garrison.errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from garrison.security.principal import CLEARANCES
from garrison.settings import Settings
from garrison.store import Store, open_store


class Library:
    """Everything about private documents one process needs, opened once.

    The records (what is indexed, with which label) live in the shared catalogue on the store; the search
    index is this process's local cache of the roots' content, reconciled with the catalogue before each
    search (documents/catalogue.py).
    """

    def __init__(self, settings: Settings, *, secret: bytes, embed: ingest.Embed, store: Store | None = None) -> None:
        self.roots = Roots.from_settings(settings.documents.roots)
        self._owns_store = store is None
        self.store = store if store is not None else open_store(settings)
        try:
            self.index = DocumentIndex(settings.documents_path)
        except BaseException:
            if self._owns_store:
                self.store.close()
            raise
        self.catalogue = Catalogue(self.store)
        self._reconciler = Reconciler(self.catalogue, self.index)
        self.max_bytes = settings.documents.max_file_bytes
        self.sync_interval = settings.documents.sync_interval
        self._secret = secret
        self._embed = embed
        self._sync_lock = threading.Lock()
        self.last_sync: tuple[float, SyncReport] | None = None  # when this process last synced, and what it did

    @classmethod
    def open(cls, settings: Settings, embed: ingest.Embed | None = None, store: Store | None = None) -> Library:
        """Open the index under GARRISON_HOME and the catalogue on the store (`store`, else the configured one)
        with the server secret; loads the embedding model if not given."""
        from garrison.security import secret_path
        from garrison.security.keys import load_server_secret

        settings.ensure_home()
        return cls(settings, secret=load_server_secret(secret_path(settings)), embed=embed or local_embedder(settings),
                   store=store)

    def close(self) -> None:
        self.index.close()
        if self._owns_store:
            self.store.close()

    def reconcile(self) -> int:
        """Apply labels and removals made on any gateway to this process's index (cheap when nothing changed)."""
        return self._reconciler.reconcile()

    # -- what a caller may see ------------------------------------------------------------------------------

    def access(self, clearance: str, collections: Sequence[str] | None = None) -> AccessFilter:
        """The filter for a clearance over the named collections (all when None); 404 naming an unknown one."""
        if clearance not in CLEARANCES:
            raise InvalidRequest(f"clearance must be one of {', '.join(CLEARANCES)}", param="clearance")
        names = self.roots.names() if collections is None else self.roots.check(collections)
        return AccessFilter.of(names, clearance)

    def search(self, query: str, access: AccessFilter, k: int = 4, mode: Mode = "hybrid") -> list[Hit]:
        """The top `k` chunks for `query` among what `access` allows."""
        if not query.strip():
            raise InvalidRequest("the search query is empty", param="query")
        vector = self._embed([query])[0] if mode != "keyword" else None
        self.reconcile()
        return self.index.search(query, vector, access, k, mode)

    def visible(self, access: AccessFilter) -> list[DocumentRecord]:
        """The catalogue's documents `access` allows: the same listing on every gateway sharing the store."""
        return self.catalogue.documents(access)

    def document(self, ref: str, access: AccessFilter | None = None) -> DocumentRecord:
        """A document by id, by `collection/path`, or by a path on disk inside a root; 404 when not visible."""
        record = self._lookup(ref)
        if record is None or (
            access is not None
            and (record.collection not in access.collections or CLEARANCES.index(record.label) > access.max_rank)
        ):
            raise NotFound(f"no document '{ref}'", param="document")
        return record

    def _lookup(self, ref: str) -> DocumentRecord | None:
        if ref.startswith("doc_"):
            return self.catalogue.get(ref)
        collection, _, rest = ref.partition("/")
        if rest and collection in self.roots.by_collection:
            root = self.roots.get(collection)
            return self.catalogue.find(collection, root.locate(rest))
        root, relative = self.roots.owning(Path(ref))
        return self.catalogue.find(root.collection, relative)

    # -- changes --------------------------------------------------------------------------------------------

    def sync(self, progress: Progress | None = None) -> SyncReport:
        """Bring the index in line with the roots (one sync at a time in this process)."""
        with self._sync_lock:
            self.reconcile()  # exclusions and labels made elsewhere first, so the sync keeps them
            report = sync_roots(
                self.roots, self.index, self.catalogue, secret=self._secret, embed=self._embed,
                max_bytes=self.max_bytes, progress=progress,
            )
            self.reconcile()
            self.last_sync = (time.time(), report)
            return report

    def relabel(self, ref: str, label: str) -> tuple[DocumentRecord, DocumentRecord]:
        """Set a document's label by hand (kept across later edits of the file); returns (before, after)."""
        if label not in CLEARANCES:
            raise InvalidRequest(f"label must be one of {', '.join(CLEARANCES)}", param="label")
        before = self.document(ref)
        after = self.catalogue.relabel(before.id, label)  # the shared record first: it is the authority
        if after is None:
            raise NotFound(f"no document '{ref}'", param="document")
        self.index.relabel(before.id, label)
        self.reconcile()
        return before, after

    def remove(self, ref: str, *, delete_file: bool = False) -> DocumentRecord:
        """Drop a document from the index; its file is deleted too, or else excluded from later syncs."""
        record = self.document(ref)
        if delete_file:
            self.roots.get(record.collection).unlink(record.path)
        self.catalogue.remove(record, exclude=not delete_file)
        self.index.delete(record.id, exclude=not delete_file)
        return record

    def upload(self, data: bytes, filename: str, *, collection: str | None, label: str | None,
               clearance: str, may_write: Callable[[str], bool] | None = None) -> DocumentRecord:
        """Write a new file into an upload root and index it; nothing is stored when any check fails.

        Checks, in order: the upload root (404/403), the uploader may write into its collection (403, when
        `may_write` is given: a key or user restricted to some collections uploads only into those), the name
        stays inside it (403), it is new (409), the label asked for (403), size (413), kind (415), the file
        parses (422), the label it gets (403).
        """
        root = self.roots.upload_root(collection)
        if may_write is not None and not may_write(root.collection):
            raise PermissionDenied(
                f"the uploader may not write into the collection '{root.collection}' (it is not among its collections)",
                param="collection",
                code="collection_not_allowed",
            )
        relative = root.locate(filename)
        if self.catalogue.find(root.collection, relative) or self.index.find(root.collection, relative):
            raise Conflict(f"'{relative}' already exists in collection '{root.collection}'", param="file")
        if label is not None:
            if label not in CLEARANCES:
                raise InvalidRequest(f"label must be one of {', '.join(CLEARANCES)}", param="label")
            _check_grant(label, clearance, "the label asked for")
        prepared = ingest.prepare(
            data, root, relative, secret=self._secret, embed=self._embed, max_bytes=self.max_bytes, label=label
        )
        source = {"upload": "the label asked for", "front_matter": "its front matter", "root": "the root's label"}
        _check_grant(prepared.record.label, clearance, source[prepared.record.label_source])
        root.write_new(relative, data)
        try:
            ingest.store(self.index, prepared)
            return self.catalogue.publish(prepared.record)
        except BaseException:
            self.index.delete(prepared.record.id)
            root.unlink(relative)
            raise


def _check_grant(label: str, clearance: str, source: str) -> None:
    if CLEARANCES.index(label) > CLEARANCES.index(clearance):
        raise PermissionDenied(
            f"the document would be labelled '{label}' ({source}), above the uploader's clearance '{clearance}'; "
            f"upload it with a label up to '{clearance}'",
            param="label",
            code="label_above_clearance",
        )


def local_embedder(settings: Settings) -> ingest.Embed:
    """The all-MiniLM-L6-v2 ONNX embedder, loaded in this process (CLI; the server passes its own)."""
    from garrison.engines.embeddings import OnnxEmbedder
    from garrison.registry import embedding_model_info

    embedder = OnnxEmbedder(embedding_model_info(), settings)
    return embedder.vectors


def top_label(labels: Sequence[str]) -> str | None:
    """The highest classification among `labels` (None when there are none)."""
    return max(labels, key=CLEARANCES.index) if labels else None


@dataclass(frozen=True, slots=True)
class Change:
    """A change to the documents, as the audit log records it (ids and labels, never text)."""

    action: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)  # ids, collections, labels: never text


def audit_change(audit: AuditLog | None, change: Change, actor: str, status: int = 200) -> None:
    """Append a documents change to the audit log (the record names documents, never their content)."""
    if audit is None:
        return
    audit.append(
        AuditEvent(
            request_id=uuid.uuid4().hex,
            method="DOCS",
            route=f"documents.{change.action}",
            status=status,
            reason=change.summary,
            key_name=actor,
            event=f"document.{change.action}",
            details=change.details or None,
        )
    )
