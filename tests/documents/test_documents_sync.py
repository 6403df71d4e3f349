"""Sync with the real embedder over real files: added, changed, deleted, corrupt, relabelled, removed."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from doc_files import write_docx, write_pdf, write_text

from garrison.documents.ingest import document_id
from garrison.documents.library import Library
from garrison.errors import NotFound, PathOutsideRoot

MakeLibrary = Callable[..., Library]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    base = tmp_path / "handbook"
    write_text(base / "leave.txt", "Employees get 25 days of paid vacation leave each year.")
    write_text(base / "falcon.md", "---\nclassification: restricted\n---\n# Project Falcon\nWe will acquire Initech.")
    write_text(base / "expenses.html", "<h1>Expenses</h1><p>Meals are reimbursed up to 50 euros.</p>")
    write_pdf(base / "it.pdf", ["Laptops are issued on the first day.", "Badges open the datacenter doors."])
    write_docx(base / "security.docx", "Security guide", [("Passwords", "Passwords need sixteen characters.")])
    return base


def test_sync_ingests_every_format_with_records_and_is_idempotent(make_library: MakeLibrary, corpus: Path) -> None:
    library = make_library([{"path": str(corpus), "collection": "hr", "label": "internal"}])
    report = library.sync()
    assert sorted(report.added) == [f"hr/{n}" for n in
                                    ("expenses.html", "falcon.md", "it.pdf", "leave.txt", "security.docx")]
    assert not report.failed and not report.refused
    records = {r.path: r for r in library.visible(library.access("restricted"))}
    assert {p: r.kind for p, r in records.items()} == {
        "expenses.html": "html", "falcon.md": "markdown", "it.pdf": "pdf", "leave.txt": "text",
        "security.docx": "docx"}
    falcon = records["falcon.md"]
    assert (falcon.label, falcon.label_source) == ("restricted", "front_matter")
    assert records["leave.txt"].label == "internal"
    assert falcon.sha256 == hashlib.sha256((corpus / "falcon.md").read_bytes()).hexdigest()
    assert falcon.size == (corpus / "falcon.md").stat().st_size
    assert records["it.pdf"].pages == 2
    assert falcon.id.startswith("doc_") and falcon.id != document_id(b"another secret" * 3, "hr", "falcon.md")
    again = library.sync()
    assert (again.added, again.updated, again.removed, again.unchanged) == ([], [], [], 5)


def test_changes_and_deletes_are_visible_to_the_next_query(make_library: MakeLibrary, corpus: Path) -> None:
    library = make_library([{"path": str(corpus), "collection": "hr"}])
    library.sync()
    everyone = library.access("restricted")
    assert any(h.path == "leave.txt" for h in library.search("paid vacation days", everyone, 3))
    write_text(corpus / "leave.txt", "Employees get 30 days of sabbatical leave every five years.")
    (corpus / "expenses.html").unlink()
    report = library.sync()
    assert (report.updated, report.removed) == (["hr/leave.txt"], ["hr/expenses.html"])
    hits = library.search("meals reimbursed euros", everyone, 10)
    assert all(h.path != "expenses.html" for h in hits)
    leave = [h for h in library.search("sabbatical", everyone, 10) if h.path == "leave.txt"]
    assert leave and "30 days" in leave[0].text and "25 days" not in leave[0].text


def test_a_corrupt_file_is_reported_and_skipped_and_the_old_version_kept(make_library: MakeLibrary,
                                                                         corpus: Path) -> None:
    library = make_library([{"path": str(corpus), "collection": "hr"}])
    library.sync()
    before = library.index.find("hr", "it.pdf")
    count = library.index.chunk_count()
    (corpus / "it.pdf").write_bytes((corpus / "it.pdf").read_bytes()[:200])
    write_text(corpus / "new.pdf", "not a pdf at all")
    report = library.sync()
    assert {f["path"]: f["status"] for f in report.failed} == {"hr/it.pdf": 422, "hr/new.pdf": 422}
    assert "previously indexed version is kept" in next(f["reason"] for f in report.failed if "it.pdf" in f["path"])
    assert library.index.find("hr", "it.pdf") == before
    assert library.index.find("hr", "new.pdf") is None
    assert library.index.chunk_count() == count


def test_a_failure_while_storing_leaves_nothing_half_ingested(make_library: MakeLibrary, corpus: Path) -> None:
    library = make_library([{"path": str(corpus), "collection": "hr"}])
    library.sync()
    before = (library.index.find("hr", "leave.txt"), library.index.chunk_count())

    def broken_embedder(texts: list[str]):  # type: ignore[no-untyped-def]
        import numpy as np

        return np.zeros((len(texts) + 1, 384), np.float32)  # wrong shape: refused inside the write

    write_text(corpus / "leave.txt", "Entirely new text about leave. " * 50)
    library._embed = broken_embedder  # type: ignore[method-assign]
    with pytest.raises(ValueError):
        library.sync()
    assert (library.index.find("hr", "leave.txt"), library.index.chunk_count()) == before


def test_oversized_files_are_skipped_as_413(make_library: MakeLibrary, corpus: Path) -> None:
    write_text(corpus / "big.txt", "x " * 30000)
    library = make_library([{"path": str(corpus), "collection": "hr"}], max_file_bytes=50000)
    report = library.sync()
    assert [(f["path"], f["status"]) for f in report.failed] == [("hr/big.txt", 413)]


def test_relabel_is_immediate_and_survives_an_edit(make_library: MakeLibrary, corpus: Path) -> None:
    library = make_library([{"path": str(corpus), "collection": "hr", "label": "internal"}])
    library.sync()
    public = library.access("public")
    assert library.search("paid vacation", public, 5) == []
    before, after = library.relabel("hr/leave.txt", "public")
    assert (before.label, after.label, after.label_source) == ("internal", "public", "manual")
    assert [h.path for h in library.search("paid vacation", public, 5)] == ["leave.txt"]
    write_text(corpus / "leave.txt", "Employees get 26 days of paid vacation leave each year.")
    library.sync()
    assert library.index.find("hr", "leave.txt").label == "public"  # type: ignore[union-attr]
    library.relabel(after.id, "restricted")
    assert "leave.txt" not in {h.path for h in library.search("paid vacation", library.access("confidential"), 5)}
    assert "leave.txt" in {h.path for h in library.search("paid vacation", library.access("restricted"), 5)}


def test_remove_excludes_from_later_syncs_or_deletes_the_file(make_library: MakeLibrary, corpus: Path) -> None:
    library = make_library([{"path": str(corpus), "collection": "hr"}])
    library.sync()
    removed = library.remove("hr/leave.txt")
    assert all(h.path != "leave.txt" for h in library.search("vacation", library.access("restricted"), 10))
    report = library.sync()
    assert report.excluded == ["hr/leave.txt"] and library.index.get(removed.id) is None
    library.remove(str(corpus / "expenses.html"), delete_file=True)
    assert not (corpus / "expenses.html").exists()
    with pytest.raises(NotFound):
        library.document("hr/expenses.html")
    with pytest.raises(PathOutsideRoot):
        library.document(str(corpus / ".." / "elsewhere.txt"))


def test_symlink_escapes_are_refused_by_sync(make_library: MakeLibrary, corpus: Path, tmp_path: Path) -> None:
    write_text(tmp_path / "payroll.txt", "The CEO earns a secret amount.")
    (corpus / "payroll.txt").symlink_to(tmp_path / "payroll.txt")
    (corpus / "up").symlink_to(tmp_path)
    library = make_library([{"path": str(corpus), "collection": "hr"}])
    report = library.sync()
    assert sorted(r["path"] for r in report.refused) == ["hr/payroll.txt", "hr/up"]
    assert all("secret amount" not in h.text for h in library.search("CEO secret amount", library.access("restricted"),
                                                                       10))


def test_a_collection_dropped_from_the_settings_is_dropped_from_the_index(make_library: MakeLibrary,
                                                                          corpus: Path, tmp_path: Path) -> None:
    other = tmp_path / "eng"
    write_text(other / "deploy.md", "# Deploys\nWe deploy on Tuesdays.")
    both = make_library([{"path": str(corpus), "collection": "hr"}, {"path": str(other), "collection": "eng"}])
    both.sync()
    both.close()
    only_eng = make_library([{"path": str(other), "collection": "eng"}])
    report = only_eng.sync()
    assert len(report.removed) == 5
    assert {r.collection for r in only_eng.index.documents()} == {"eng"}


def test_a_missing_root_keeps_its_documents(make_library: MakeLibrary, corpus: Path) -> None:
    library = make_library([{"path": str(corpus), "collection": "hr"}])
    library.sync()
    corpus.rename(corpus.with_name("unmounted"))
    report = library.sync()
    assert report.removed == [] and report.failed[0]["path"] == "hr/"
    assert len(library.index.documents()) == 5


async def test_the_server_resyncs_at_start_and_every_interval(make_library: MakeLibrary, corpus: Path) -> None:
    import threading

    import anyio

    from garrison.api.app import _resyncing

    library = make_library([{"path": str(corpus), "collection": "hr"}], sync_interval=0.01)
    synced = threading.Semaphore(0)
    real_sync = library.sync

    def counted():  # type: ignore[no-untyped-def]
        report = real_sync()
        synced.release()
        return report

    library.sync = counted  # type: ignore[method-assign]
    async with _resyncing(library, None):
        assert await anyio.to_thread.run_sync(synced.acquire, True, 60)  # the first sync, at start
        assert len(library.index.documents()) == 5
        (corpus / "leave.txt").unlink()
        assert await anyio.to_thread.run_sync(synced.acquire, True, 60)  # a later one sees the delete
        assert await anyio.to_thread.run_sync(synced.acquire, True, 60)
    assert library.index.find("hr", "leave.txt") is None
