"""The console's documents page: what the user may see (with labels), search, upload and sync status.

Every listing and search goes through the documents API's own filter (`caller_access` with the user's
principal: its clearance and collections), and an upload through `Library.upload` with the user's
clearance, so the console can show no more than the API would give the same grants.
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from garrison.api.context import get_context
from garrison.api.documents import guarded
from garrison.console.auth import AdminForm, AdminUser, SignedIn, User, UserForm, console_of
from garrison.console.web import CONSOLE_PATH, ConsoleRoute
from garrison.documents.library import Library
from garrison.documents.retrieve import Retrieval, caller_access
from garrison.errors import GarrisonError, InvalidRequest, PermissionDenied
from garrison.security.principal import CLEARANCES
from garrison.store.times import to_iso

router = APIRouter(prefix=f"{CONSOLE_PATH}/documents", include_in_schema=False, route_class=ConsoleRoute)
_SEARCH_K = 8


def _library(request: Request) -> Library | None:
    library: Library | None = getattr(request.app.state, "documents", None)
    return library


def _require(who: SignedIn, scope: str, what: str) -> None:
    if not who.user.principal().has_scope(scope):
        raise PermissionDenied(f"your account may not {what} (it lacks the '{scope}' scope)", code="scope_missing")


def _status(library: Library) -> dict[str, Any] | None:
    if library.last_sync is None:
        return None
    at, report = library.last_sync
    return {"at": to_iso(at)[:19].replace("T", " "), "added": len(report.added), "updated": len(report.updated),
            "removed": len(report.removed), "unchanged": report.unchanged, "failed": len(report.failed),
            "refused": len(report.refused)}


async def _page(request: Request, who: SignedIn, *, query: str = "", hits: list[dict[str, Any]] | None = None,
                classification: str | None = None, error: str | None = None, notice: str | None = None,
                status: int = 200) -> Response:
    console = console_of(request)
    library = _library(request)
    principal = who.user.principal()
    values: dict[str, Any] = {
        "configured": library is not None, "readable": principal.has_scope("documents"),
        "writable": principal.has_scope("documents:write"), "documents": [], "uploads": [], "sync": None,
        "labels": CLEARANCES[: principal.clearance_rank + 1], "query": query, "hits": hits,
        "classification": classification, "error": error, "notice": notice,
    }
    if library is not None:
        values["sync"] = _status(library)
        values["uploads"] = [r.collection for r in library.roots.by_collection.values() if r.upload]
        if values["readable"]:
            access = caller_access(library, principal, None)
            values["documents"] = await anyio.to_thread.run_sync(library.visible, access)
            values["total_chunks"] = sum(d.chunks for d in values["documents"])
    return console.page("documents.html", request, who, status=status, **values)


@router.get("")
async def documents_page(request: Request, who: User, q: str = "") -> Response:
    """The documents this user may see; with `q`, the chunks a search finds among them."""
    library = _library(request)
    query = q.strip()
    if not query or library is None:
        return await _page(request, who)
    try:
        _require(who, "documents", "search documents")
        principal = who.user.principal()
        access = caller_access(library, principal, None)
        found = Retrieval(await anyio.to_thread.run_sync(library.search, query[:4000], access, _SEARCH_K))
        found = Retrieval(guarded(request, principal, found.hits))  # the same guardrails as the API's search
    except GarrisonError as exc:
        return await _page(request, who, query=query, error=exc.message, status=exc.status)
    named = ", ".join(f"{h.document_id} ({h.label})" for h in found.hits)
    get_context(request).reason = f"console: {who.user.username} searched documents, retrieved {named or 'nothing'}"
    hits = [{**h.to_dict(), "number": i} for i, h in enumerate(found.hits, start=1)]
    return await _page(request, who, query=query, hits=hits, classification=found.classification)


@router.post("")
async def documents_upload(request: Request, who: User, form: UserForm) -> Response:
    """An upload into an upload root: the same checks, in the same order, as POST /v1/documents."""
    library = _library(request)
    try:
        if library is None:
            raise InvalidRequest("no document storage roots are configured on this server")
        _require(who, "documents:write", "upload documents")
        file = form.get("file")
        if not isinstance(file, UploadFile) or not file.filename:
            raise InvalidRequest("choose a file to upload", param="file")
        data = await file.read(library.max_bytes + 1)
        collection = str(form.get("collection") or "").strip() or None
        label = str(form.get("label") or "").strip() or None
        principal = who.user.principal()
        filename = file.filename
        record = await anyio.to_thread.run_sync(
            lambda: library.upload(
                data,
                filename,
                collection=collection,
                label=label,
                clearance=principal.clearance,
                may_write=principal.allows_collection,
            )
        )
    except GarrisonError as exc:
        get_context(request).deny(f"console: upload refused: {exc.message}")
        return await _page(request, who, error=f"Upload refused: {exc.message}", status=exc.status)
    get_context(request).reason = (
        f"console: {who.user.username} uploaded document {record.id} ({record.collection}, {record.label})"
    )
    notice = f"Uploaded {record.path} into {record.collection}, labelled {record.label}."
    return await _page(request, who, notice=notice, status=201)


@router.post("/sync")
async def documents_sync(request: Request, who: AdminUser, form: AdminForm) -> Response:
    """Re-read every root now (admins)."""
    library = _library(request)
    if library is None:
        return await _page(request, who, error="no document storage roots are configured on this server",
                           status=404)
    report = await anyio.to_thread.run_sync(library.sync)
    get_context(request).reason = f"console admin: {report.summary()}"
    return await _page(request, who, notice=f"Synced: {report.summary().removeprefix('documents sync: ')}.")
