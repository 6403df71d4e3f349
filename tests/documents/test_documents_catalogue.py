"""One documents catalogue shared by two gateways (two homes, two local indexes, one store: SQLite or PostgreSQL).

The catalogue (records, labels, exclusions) is shared; each gateway's search index is its own cache of the roots.
A relabel or removal made on one gateway is honoured by the other's very next search, without a sync there.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from doc_files import write_text

from backends import PostgresCluster
from garrison.documents.library import Library
from garrison.errors import StoreUnavailable
from garrison.settings import load_settings

Embed = Callable[[list[str]], np.ndarray]
Pair = Callable[..., tuple[Library, Library]]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    base = tmp_path / "handbook"
    write_text(base / "leave.txt", "Employees get 25 days of paid vacation leave each year.")
    write_text(base / "falcon.md", "---\nclassification: restricted\n---\n# Project Falcon\nWe will acquire Initech.")
    write_text(base / "expenses.html", "<h1>Expenses</h1><p>Meals are reimbursed up to 50 euros.</p>")
    return base


def _open(tmp_path: Path, name: str, url: str, corpus: Path, embed: Embed) -> Library:
    settings = load_settings(
        home=tmp_path / name, store={"url": url}, auth={"secret_file": tmp_path / "shared.secret"},
        documents={"roots": [{"path": str(corpus), "collection": "hr", "label": "internal"}]},
    )
    return Library.open(settings, embed=embed)


@pytest.fixture(params=["sqlite", "postgresql"])
def pair(request: pytest.FixtureRequest, tmp_path: Path, corpus: Path, embed: Embed) -> Iterator[Pair]:
    """Two gateways' libraries over the same roots and one store: a shared SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        url = request.getfixturevalue("postgres").database(f"d_{uuid.uuid4().hex[:12]}")
    opened: list[Library] = []

    def make() -> tuple[Library, Library]:
        opened.extend([_open(tmp_path, "gw-a", url, corpus, embed), _open(tmp_path, "gw-b", url, corpus, embed)])
        return opened[-2], opened[-1]

    yield make
    for library in opened:
        library.close()


def _paths(library: Library, query: str, clearance: str) -> set[str]:
    return {h.path for h in library.search(query, library.access(clearance), 10)}


def test_one_catalogue_labels_and_removals_honoured_by_the_other_gateway(pair: Pair, corpus: Path) -> None:
    a, b = pair()
    assert a.store.dialect == b.store.dialect and a.index.store.path != b.index.store.path
    report = a.sync()
    assert len(report.added) == 3
    # b lists what a indexed before it syncs: the listing is the shared catalogue
    assert [(r.id, r.label) for r in b.visible(b.access("restricted"))] == [
        (r.id, r.label) for r in a.visible(a.access("restricted"))]
    assert _paths(b, "paid vacation", "restricted") == set()  # ...but its own search index is still empty
    version = b.catalogue.version()
    assert len(b.sync().added) == 3 and b.catalogue.version() == version  # same content: nothing republished
    assert "leave.txt" in _paths(b, "paid vacation days", "internal")

    a.relabel("hr/leave.txt", "restricted")  # on gateway a; b's next search honours it, no sync on b
    assert "leave.txt" not in _paths(b, "paid vacation days", "confidential")
    hits = [h for h in b.search("paid vacation days", b.access("restricted"), 10) if h.path == "leave.txt"]
    assert [h.label for h in hits] == ["restricted"] and b.index.find("hr", "leave.txt").label == "restricted"  # type: ignore[union-attr]
    a.relabel("hr/leave.txt", "public")
    assert "leave.txt" in _paths(b, "paid vacation days", "public")

    removed = b.remove("hr/expenses.html")  # on gateway b, kept out of every later sync
    assert "expenses.html" not in _paths(a, "meals reimbursed euros", "restricted")
    again = a.sync()
    assert again.excluded == ["hr/expenses.html"] and a.index.get(removed.id) is None

    # an edit synced by b keeps the label set by hand on a; a's stale copy keeps the higher of the two labels
    write_text(corpus / "leave.txt", "Employees get 26 days of paid vacation leave each year.")
    assert b.sync().updated == ["hr/leave.txt"]
    shared = a.catalogue.find("hr", "leave.txt")
    assert shared is not None and (shared.label, shared.label_source) == ("public", "manual")
    assert a.document("hr/leave.txt").sha256 == shared.sha256 != a.index.find("hr", "leave.txt").sha256  # type: ignore[union-attr]

    (corpus / "falcon.md").unlink()  # a file gone: b's sync removes it for a too (a tombstone)
    assert b.sync().removed == ["hr/falcon.md"]
    assert "falcon.md" not in _paths(a, "Project Falcon Initech", "restricted")
    assert a.index.find("hr", "falcon.md") is None


def test_a_changed_file_never_lowers_the_label_of_a_stale_local_copy(pair: Pair, corpus: Path) -> None:
    a, b = pair()
    a.sync()
    b.sync()
    assert "falcon.md" not in _paths(a, "Project Falcon Initech", "internal")
    # the secret paragraph is taken out and the file relabelled public; only b has synced the new version
    write_text(corpus / "falcon.md", "---\nclassification: public\n---\n# Project Falcon\nFalcon is a bird.")
    assert b.sync().updated == ["hr/falcon.md"]
    assert b.catalogue.find("hr", "falcon.md").label == "public"  # type: ignore[union-attr]
    assert "falcon.md" in _paths(b, "Project Falcon", "public")
    # a still holds the old text: the catalogue's lower label does not reach it until a re-ingests the file
    assert "falcon.md" not in _paths(a, "Project Falcon Initech", "confidential")
    assert a.index.catalogue_version() == a.catalogue.version()  # reconciled, and still restricted
    assert a.index.find("hr", "falcon.md").label == "restricted"  # type: ignore[union-attr]
    a.sync()
    found = [h for h in a.search("Project Falcon", a.access("public"), 10) if h.path == "falcon.md"]
    assert found and "Initech" not in found[0].text and found[0].label == "public"


def test_an_index_made_before_the_catalogue_existed_is_published_not_reingested(
    tmp_path: Path, corpus: Path, embed: Embed
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    library = _open(tmp_path, "gw-a", url, corpus, embed)
    library.sync()
    library.close()
    fresh = f"sqlite:///{tmp_path / 'new-store.db'}"  # the same local index, a store whose catalogue is empty
    moved = _open(tmp_path, "gw-a", fresh, corpus, embed)
    try:
        assert moved.visible(moved.access("restricted")) == []
        report = moved.sync()
        assert (report.added, report.updated, report.unchanged) == ([], [], 3)
        assert {r.path for r in moved.visible(moved.access("restricted"))} == {"leave.txt", "falcon.md",
                                                                              "expenses.html"}
    finally:
        moved.close()


def test_postgres_outage_search_serves_the_local_index_and_changes_are_503(
    corpus: Path, embed: Embed, tmp_path: Path
) -> None:
    cluster = PostgresCluster(Path(tempfile.mkdtemp(prefix="garrison-pg-docs-"))).init()
    library = None
    try:
        url = cluster.database("docs")
        library = _open(tmp_path, "gw-a", url, corpus, embed)
        library.sync()
        library.relabel("hr/leave.txt", "public")
        cluster.stop()
        assert "leave.txt" in _paths(library, "paid vacation days", "public")  # as last reconciled
        assert "falcon.md" not in _paths(library, "Project Falcon Initech", "confidential")
        with pytest.raises(StoreUnavailable):
            library.relabel("hr/leave.txt", "restricted")
        with pytest.raises(StoreUnavailable):
            library.visible(library.access("restricted"))
        cluster.start()
        before, after = library.relabel("hr/leave.txt", "restricted")
        assert (before.label, after.label) == ("public", "restricted")
        assert "leave.txt" not in _paths(library, "paid vacation days", "confidential")
    finally:
        if library is not None:
            library.close()
        cluster.stop()
