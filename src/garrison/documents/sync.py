"""Bring the index in line with the roots: new and changed files ingested, deleted ones removed.

Each document is its own transaction; a file that cannot be read is reported and skipped (a previously
indexed version of it stays as it was), so a sync never leaves anything half-ingested. What a sync indexes
is published to the shared catalogue (documents/catalogue.py): a label set by hand on any gateway is kept,
exclusions made on any gateway are honoured, and a file gone from a root is removed for every gateway.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from garrison.documents import ingest
from garrison.documents.catalogue import Catalogue
from garrison.documents.index import DocumentIndex
from garrison.documents.parsers import KINDS
from garrison.documents.roots import Root, Roots
from garrison.errors import GarrisonError

Progress = Callable[[str, int, int], None]
"""Called as (path, files done, files in total) while a sync walks the roots."""


@dataclass(slots=True)
class SyncReport:
    """What a sync did, per file."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    chunks: int = 0
    pages: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line for the audit log: counts only, no paths."""
        return (
            f"documents sync: {len(self.added)} added, {len(self.updated)} updated, {len(self.removed)} removed, "
            f"{len(self.failed)} failed, {len(self.refused)} refused"
        )

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)


def sync_roots(
    roots: Roots,
    index: DocumentIndex,
    catalogue: Catalogue,
    *,
    secret: bytes,
    embed: ingest.Embed,
    max_bytes: int,
    progress: Progress | None = None,
) -> SyncReport:
    """Sync every configured root, then drop documents of collections no longer configured.

    Files gone from a configured root are removed from the catalogue too (for every gateway); a collection
    this gateway no longer configures is dropped from its local index only (another may still serve it).
    """
    started = time.perf_counter()
    report = SyncReport()
    plan: list[tuple[Root, str]] = []
    for root in roots.by_collection.values():
        if not root.path.is_dir():  # an unmounted share must not empty its collection
            report.failed.append({"path": f"{root.collection}/", "status": 404, "reason":
                                  f"the root {root.path} is not a directory; its indexed documents are kept"})
            continue
        seen: set[str] = set()
        excluded = index.excluded(root.collection) | catalogue.excluded(root.collection)
        for entry in root.walk():
            where = f"{root.collection}/{entry.shown}"
            if entry.refused is not None:
                report.refused.append({"path": where, "reason": entry.refused})
            elif entry.relative is None or entry.relative in seen:
                continue
            elif not entry.relative.lower().endswith(tuple(KINDS)):
                report.ignored.append(where)
            elif entry.relative in excluded:
                seen.add(entry.relative)
                report.excluded.append(where)
            else:
                seen.add(entry.relative)
                plan.append((root, entry.relative))
        gone = {r.id: r for r in catalogue.documents(collection=root.collection) if r.path not in seen}
        for record in index.documents(collection=root.collection):
            if record.path not in seen:
                index.delete(record.id)
                gone[record.id] = record
        for record in gone.values():
            catalogue.remove(record)
            report.removed.append(f"{root.collection}/{record.path}")
    for record in index.documents():
        if record.collection not in roots.by_collection:
            index.delete(record.id)
            report.removed.append(f"{record.collection}/{record.path}")
    for done, (root, relative) in enumerate(plan):
        if progress is not None:
            progress(f"{root.collection}/{relative}", done, len(plan))
        _sync_file(root, relative, index, catalogue, report, secret=secret, embed=embed, max_bytes=max_bytes)
    if progress is not None:
        progress("", len(plan), len(plan))
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _sync_file(
    root: Root, relative: str, index: DocumentIndex, catalogue: Catalogue, report: SyncReport, *, secret: bytes,
    embed: ingest.Embed, max_bytes: int,
) -> None:
    where = f"{root.collection}/{relative}"
    existing = index.find(root.collection, relative)
    shared = catalogue.find(root.collection, relative)
    try:
        data = root.read(relative, max_bytes)
        ingest.check_size(len(data), max_bytes, relative)
        digest = hashlib.sha256(data).hexdigest()
        if existing is not None and existing.sha256 == digest:
            if shared is None or shared.sha256 != digest:  # indexed here before the catalogue knew it
                catalogue.publish(existing)
            report.unchanged += 1
            return
        manual = next((r.label for r in (shared, existing) if r is not None and r.label_source == "manual"), None)
        prepared = ingest.prepare(
            data, root, relative, secret=secret, embed=embed, max_bytes=max_bytes, label=manual, label_source="manual"
        )
        ingest.store(index, prepared)
        catalogue.publish(prepared.record)
    except GarrisonError as exc:
        kept = " (the previously indexed version is kept)" if existing is not None else ""
        report.failed.append({"path": where, "status": exc.status, "reason": exc.message + kept})
        return
    except OSError as exc:
        report.failed.append({"path": where, "status": 422, "reason": f"cannot read the file: {exc.strerror}"})
        return
    (report.updated if existing is not None else report.added).append(where)
    report.chunks += len(prepared.chunks)
    report.pages += prepared.record.pages or 1
