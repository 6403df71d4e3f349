"""The documents API: list and search what the key's clearance allows, upload into an upload root, sync."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from garrison.api.context import get_context
from garrison.api.deps import authorize
from garrison.documents.index import Hit
from garrison.documents.library import Library
from garrison.documents.retrieve import Retrieval, caller_access
from garrison.errors import NotFound
from garrison.guard.stage import guard_of
from garrison.security.principal import CLEARANCES, Principal

router = APIRouter(prefix="/v1/documents", tags=["documents"])


def get_library(request: Request) -> Library:
    library: Library | None = getattr(request.app.state, "documents", None)
    if library is None:
        raise NotFound("no document storage roots are configured on this server ([[documents.roots]])")
    return library


LibraryDep = Annotated[Library, Depends(get_library)]


class SearchRequest(BaseModel):
    """A search over the documents the key may see."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=4000)
    k: int = Field(default=4, ge=1, le=50)
    collections: list[str] | None = Field(default=None, description="Collections to search (default: all).")
    mode: Literal["hybrid", "keyword", "vector"] = "hybrid"


def guarded(request: Request, caller: Principal | None, hits: list[Hit]) -> list[Hit]:
    """Search hits under the caller's guardrail policy's `retrieved` rules, as chunks on their way into a prompt.

    Redaction rewrites a hit's text, a blocking rule (indirect injection) refuses the search with 400
    `policy_violation`; the verdicts are in the request's audit record either way.
    """
    inference = getattr(request.app.state, "inference", None)
    guard = guard_of(inference.stages) if inference is not None else None
    if guard is None or not hits:
        return hits
    details = get_context(request).details = {}
    texts = guard.screen_search(caller, [h.text for h in hits], details)
    return [replace(h, text=text) for h, text in zip(hits, texts, strict=True)]


@router.get("")
async def list_documents(request: Request, library: LibraryDep, collection: str | None = None) -> JSONResponse:
    caller = await authorize(request, "documents")
    access = caller_access(library, caller, [collection] if collection else None)
    records = await anyio.to_thread.run_sync(library.visible, access)
    return JSONResponse({"object": "list", "data": [r.to_dict() for r in records]})


@router.post("/search")
async def search(body: SearchRequest, request: Request, library: LibraryDep) -> JSONResponse:
    caller = await authorize(request, "documents")
    access = caller_access(library, caller, body.collections)
    hits = await anyio.to_thread.run_sync(library.search, body.query, access, body.k, body.mode)
    ctx = get_context(request)
    named = ", ".join(f"{h.document_id} ({h.label})" for h in hits)
    ctx.reason = f"retrieved {named or 'nothing'}"  # ids and labels, never text
    found = Retrieval(guarded(request, caller, hits))
    data = [{**h.to_dict(), "number": i} for i, h in enumerate(found.hits, start=1)]
    return JSONResponse({"object": "list", "data": data, "classification": found.classification})


@router.post("", status_code=201)
async def upload(
    request: Request,
    library: LibraryDep,
    file: Annotated[UploadFile, File(description="The document.")],
    collection: Annotated[str | None, Form(description="The upload root's collection.")] = None,
    label: Annotated[str | None, Form(description="Label, no higher than the key's clearance.")] = None,
) -> JSONResponse:
    caller = await authorize(request, "documents:write")
    data = await file.read(library.max_bytes + 1)
    clearance = caller.clearance if caller is not None else CLEARANCES[-1]
    may_write = caller.allows_collection if caller is not None else None
    record = await anyio.to_thread.run_sync(
        lambda: library.upload(
            data, file.filename or "", collection=collection, label=label, clearance=clearance, may_write=may_write
        )
    )
    get_context(request).reason = f"document {record.id} ({record.collection}, {record.label}) uploaded"
    return JSONResponse(record.to_dict(), status_code=201)


@router.post("/sync")
async def sync(request: Request, library: LibraryDep) -> JSONResponse:
    await authorize(request, "admin")
    report = await anyio.to_thread.run_sync(library.sync)
    get_context(request).reason = report.summary()
    return JSONResponse(report.to_dict())
