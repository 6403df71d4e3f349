"""Retrieval for one caller: its clearance and the collections it asks for become the index's filter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from garrison.documents.index import AccessFilter, Hit
from garrison.documents.library import Library, top_label
from garrison.domain import Citation, Citations
from garrison.errors import PermissionDenied
from garrison.security.principal import CLEARANCES, Principal

QUOTE_CHARS = 400  # the quoted span a citation carries


def caller_access(library: Library, caller: Principal | None, collections: Sequence[str] | None) -> AccessFilter:
    """The filter for a caller: its clearance over the named collections (all it may read when None).

    A named collection must exist (404) and be one the key may read (403). `caller` None means
    authentication is off (loopback only, every request allowed): full clearance, every collection.
    """
    if caller is None:
        return library.access(CLEARANCES[-1], collections)
    if collections is None:
        allowed = [c for c in library.roots.names() if caller.allows_collection(c)]
        return AccessFilter.of(allowed, caller.clearance)
    access = library.access(caller.clearance, collections)
    refused = [c for c in access.collections if not caller.allows_collection(c)]
    if refused:
        raise PermissionDenied(
            f"API key '{caller.name}' ({caller.key_id}) may not read the collection '{refused[0]}' "
            f"(it may read: {', '.join(sorted(caller.collections))})",
            param="collections",
            code="collection_not_allowed",
        )
    return access


@dataclass(frozen=True, slots=True)
class Retrieval:
    """The chunks retrieved for one request, numbered as the prompt shows them."""

    hits: list[Hit]

    @property
    def classification(self) -> str | None:
        """The highest label among the retrieved chunks: the classification of an answer built on them."""
        return top_label([h.label for h in self.hits])

    def citations(self) -> Citations:
        return Citations(
            [
                Citation(i, h.document_id, h.title, h.path, h.collection, h.page, h.heading, h.label, quote(h.text))
                for i, h in enumerate(self.hits, start=1)
            ],
            self.classification,
        )

    def annotations(self) -> list[dict[str, object]]:
        """What the audit record may hold: document ids, labels and positions, never the text."""
        return [
            {"number": i, "document_id": h.document_id, "collection": h.collection, "label": h.label, "page": h.page}
            for i, h in enumerate(self.hits, start=1)
        ]


def retrieve(
    library: Library, query: str, caller: Principal | None, collections: Sequence[str] | None, k: int
) -> Retrieval:
    """The top `k` chunks for `query` that `caller` may see."""
    return Retrieval(library.search(query, caller_access(library, caller, collections), k))


def quote(text: str, limit: int = QUOTE_CHARS) -> str:
    """A chunk's text shortened to `limit` characters at a word boundary."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[:limit].rsplit(" ", 1)[0]
    return cut + " …"
