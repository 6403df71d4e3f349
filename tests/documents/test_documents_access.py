"""Randomized clearance trials: queries that name restricted documents by title and content never get them.

1,200 (clearance, collections, query) trials over a corpus of every format and label, through the search
and through the retrieval stage: no chunk above the caller's clearance or outside its collections in the
results, the prompt, the citations, the annotations or the logs; every top-k full from what it may see;
relabels and deletes interleaved and visible to the very next query.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from doc_files import write_docx, write_pdf, write_text

from garrison.documents.index import AccessFilter
from garrison.documents.library import Library
from garrison.documents.stage import RetrievalStage
from garrison.domain import (
    ChatMessage,
    Citations,
    GenerationDone,
    GenerationEvent,
    GenerationRequest,
    RetrievalOptions,
    TokenDelta,
    Usage,
)
from garrison.security.principal import CLEARANCES, Principal

COLLECTIONS = ("hr", "eng", "legal")
TOPICS = ("budget", "merger", "salaries", "roadmap", "incident", "contract")
TRIALS = 1200


def _marker(collection: str, label: str, n: int) -> str:
    return f"zq{collection}{label}{n}x"


def _title(collection: str, label: str, n: int) -> str:
    return f"{label.capitalize()} {collection.upper()} {TOPICS[n % len(TOPICS)]} plan {n}"


def _body(collection: str, label: str, n: int) -> str:
    topic = TOPICS[n % len(TOPICS)]
    return (f"This {label} {collection} memo about the {topic} carries the code {_marker(collection, label, n)}. "
            f"The {topic} figures for project {n} are final. ")


def _write_corpus(base: Path) -> dict[str, tuple[str, str, str]]:
    """Five documents per (collection, label), every format; returns marker -> (collection, label, title)."""
    truth: dict[str, tuple[str, str, str]] = {}
    for collection in COLLECTIONS:
        for label in CLEARANCES:
            for n in range(5):
                title, body = _title(collection, label, n), _body(collection, label, n) * 3
                folder = base / collection
                name = f"{label}-{n}"
                match n:
                    case 0:
                        write_text(folder / f"{name}.md", f"---\nclassification: {label}\ntitle: {title}\n---\n"
                                                          f"# {title}\n{body}")
                    case 1:
                        write_text(folder / label / f"{name}.txt", f"{title}\n\n{body}")
                    case 2:
                        html = f"<title>{title}</title><h1>{title}</h1><p>{body}</p>"
                        write_text(folder / label / f"{name}.html", html)
                    case 3:
                        write_pdf(folder / label / f"{name}.pdf", [body, f"Page two of {title}. {body}"], title=title)
                    case _:
                        write_docx(folder / label / f"{name}.docx", title, [("Summary", body)])
                truth[_marker(collection, label, n)] = (collection, label, title)
    return truth


@pytest.fixture
def corpus(tmp_path: Path, make_library: Callable[..., Library]) -> tuple[Library, dict[str, tuple[str, str, str]]]:
    truth = _write_corpus(tmp_path / "docs")
    roots = [{"path": str(tmp_path / "docs" / c), "collection": c, "label": "public"} for c in COLLECTIONS]
    library = make_library(roots)
    report = library.sync()
    assert not report.failed and not report.refused and len(report.added) == len(truth)
    # the root label is public; label each non-Markdown file by hand as its folder says (an operator's relabel)
    for record in library.index.documents():
        folder_label = record.path.split("/")[0]
        if folder_label in CLEARANCES and record.label != folder_label:
            library.relabel(record.id, folder_label)
    return library, truth


def _visible(library: Library, access: AccessFilter) -> int:
    marks = ", ".join("?" for _ in access.collections)
    row = library.index.store.fetchone(
        f"SELECT COUNT(*) FROM chunks WHERE label_rank <= ? AND collection IN ({marks})",
        (access.max_rank, *access.collections),
    )
    return int(row[0]) if row else 0


def _principal(clearance: str, collections: frozenset[str] = frozenset({"*"})) -> Principal:
    return Principal("k1", "tester", "dev", frozenset({"chat", "documents"}), frozenset({"*"}), clearance,
                     collections=collections)


async def _events() -> AsyncIterator[GenerationEvent]:
    yield TokenDelta("ok")
    yield GenerationDone("stop", Usage(1, 1))


async def test_no_trial_ever_sees_above_its_clearance(corpus, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    library, truth = corpus
    caplog.set_level(logging.DEBUG)
    stage = RetrievalStage(library)
    rng = random.Random(15)
    markers = list(truth)
    restricted = [m for m in markers if truth[m][1] == "restricted"]
    checked_chunks = 0
    for trial in range(TRIALS):
        clearance = rng.choice(CLEARANCES)
        rank = CLEARANCES.index(clearance)
        collections = rng.sample(COLLECTIONS, rng.randint(1, len(COLLECTIONS)))
        target = rng.choice(restricted if rng.random() < 0.6 else markers)
        _, _, title = truth[target]
        query = rng.choice([title, target, f"What does {title} say? {target}", f"{title} figures code"])
        k = rng.randint(1, 8)
        access = library.access(clearance, collections)
        forbidden = {m for m, (c, lab, _) in truth.items() if CLEARANCES.index(lab) > rank or c not in collections}

        hits = library.search(query, access, k, rng.choice(["hybrid", "keyword", "vector"]))
        assert all(CLEARANCES.index(h.label) <= rank and h.collection in collections for h in hits), trial
        assert not any(m in h.text for h in hits for m in forbidden), trial
        checked_chunks += len(hits)

        # the same trial through the stage, for a key limited to those collections that names none of them
        key = _principal(clearance, frozenset(collections))
        request = GenerationRequest(
            model="m", messages=[ChatMessage("user", query)],
            documents=RetrievalOptions(collections if rng.random() < 0.5 else None, k),
        )
        request = await stage.before(request, key)
        prompt = "\n".join(m.content for m in request.messages or [])
        assert not any(m in prompt.replace(query, "") for m in forbidden), trial
        assert request.data_label is None or CLEARANCES.index(request.data_label) <= rank
        annotations = json.dumps(request.annotations)
        assert not any(m in annotations for m in markers), trial  # ids and labels only, never text
        assert all(CLEARANCES.index(a["label"]) <= rank for a in request.annotations["documents"])
        out = [e async for e in stage.after(request, key, _events())]
        citations = next(e for e in out if isinstance(e, Citations))
        assert isinstance(out[-1], GenerationDone) and isinstance(out[-2], Citations)
        assert all(CLEARANCES.index(c.label) <= rank and c.collection in collections for c in citations.items)
        assert not any(m in c.quote for c in citations.items for m in forbidden), trial
        assert len(citations.items) == min(k, _visible(library, access)), trial  # a full top-k

        if trial % 150 == 75:  # a relabel or a delete, visible to the very next query
            _relabel_and_delete_checks(library, truth, rng)
    assert checked_chunks > TRIALS  # the trials retrieved plenty, so the checks above had something to check
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert not any(m in logged for m in markers)


def _relabel_and_delete_checks(library: Library, truth: dict[str, tuple[str, str, str]], rng: random.Random) -> None:
    marker = rng.choice([m for m, (_, lab, _) in truth.items() if lab == "public"])
    collection = truth[marker][0]
    public = library.access("public", [collection])
    record = next(r for r in library.index.documents(collection=collection)
                  if any(marker in c["text"] for c in library.index.chunks_of(r.id)))
    assert any(marker in h.text for h in library.search(marker, public, 3, "keyword"))
    library.relabel(record.id, "restricted")
    assert not any(marker in h.text for h in library.search(marker, public, 10))
    library.relabel(record.id, "public")
    assert any(marker in h.text for h in library.search(marker, public, 3))
    library.index.delete(record.id)
    assert not any(marker in h.text for h in library.search(marker, library.access("restricted"), 10))
    assert library.sync().added == [f"{collection}/{record.path}"]  # the file is still there: sync restores it
    assert any(marker in h.text for h in library.search(marker, public, 3))
