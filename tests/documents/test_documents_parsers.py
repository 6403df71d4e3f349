"""Every supported format from real files made here; unsupported and damaged files say why."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from doc_files import write_docx, write_pdf

from garrison.documents.chunking import MAX_WORDS, chunk_document
from garrison.documents.parsers import parse
from garrison.errors import UnreadableDocument, UnsupportedDocument


def test_text_keeps_everything_and_titles_by_file_name() -> None:
    doc = parse(b"first line\n\nsecond paragraph", "notes/plan.txt")
    assert (doc.kind, doc.title, doc.label) == ("text", "plan", None)
    assert "second paragraph" in doc.sections[0].text


def test_markdown_front_matter_sets_label_and_title_and_headings_nest() -> None:
    text = (
        "---\nclassification: Confidential\ntitle: Pricing 2026\n---\n"
        "Intro line.\n# Plans\nBasic costs 10.\n## Enterprise\nCall us.\n```\n# not a heading\n```\n# Terms\nNet 30."
    )
    doc = parse(text.encode(), "pricing.md")
    assert (doc.kind, doc.title, doc.label) == ("markdown", "Pricing 2026", "confidential")
    assert [s.heading for s in doc.sections] == [None, "Plans", "Plans > Enterprise", "Terms"]
    assert "# not a heading" in doc.sections[2].text


def test_markdown_unknown_classification_is_refused_with_the_reason() -> None:
    with pytest.raises(UnreadableDocument, match="classification 'secret' is not one of"):
        parse(b"---\nclassification: secret\n---\nbody", "x.md")


def test_html_visible_text_by_heading_without_scripts_or_styles() -> None:
    html = (
        "<html><head><title>Expense &amp; travel</title><style>p{color:red}</style></head><body>"
        "<h1>Expenses</h1><p>Meals up to 50 euros.</p><script>steal()</script>"
        "<h2>Travel</h2><p>Economy class.</p></body></html>"
    )
    doc = parse(html.encode(), "rules.html")
    assert doc.title == "Expense & travel"
    assert [(s.heading, s.text) for s in doc.sections] == [
        ("Expenses", "Meals up to 50 euros."), ("Expenses > Travel", "Economy class.")]
    assert all("steal" not in s.text and "color" not in s.text for s in doc.sections)


def test_pdf_keeps_page_numbers_and_title(tmp_path: Path) -> None:
    path = write_pdf(tmp_path / "it.pdf", ["Laptops are issued on day one.", "Badges open the datacenter."],
                     title="IT handbook")
    doc = parse(path.read_bytes(), "it.pdf")
    assert (doc.kind, doc.title, doc.pages) == ("pdf", "IT handbook", 2)
    assert [(s.page, "datacenter" in s.text) for s in doc.sections] == [(1, False), (2, True)]
    assert [c.page for c in chunk_document(doc)] == [1, 2]


def test_docx_headings_title_and_tables(tmp_path: Path) -> None:
    path = write_docx(tmp_path / "sec.docx", "Security guide",
                      [("Passwords", "Use sixteen characters."), ("Phishing", "Report odd mail.")],
                      table=[["system", "owner"], ["vpn", "netops"]])
    doc = parse(path.read_bytes(), "sec.docx")
    assert (doc.kind, doc.title) == ("docx", "Security guide")
    assert [s.heading for s in doc.sections] == ["Passwords", "Phishing"]
    assert "vpn | netops" in doc.sections[-1].text


@pytest.mark.parametrize("name", ["photo.png", "archive.zip", "Makefile", "slides.pptx"])
def test_unsupported_kinds_are_415(name: str) -> None:
    with pytest.raises(UnsupportedDocument, match="not a supported document type") as caught:
        parse(b"data", name)
    assert caught.value.status == 415


def test_damaged_files_are_422_with_the_reason(tmp_path: Path) -> None:
    good = write_pdf(tmp_path / "a.pdf", ["some text"]).read_bytes()
    cases = {
        "fake.pdf": (b"hello", "not a PDF"),
        "cut.pdf": (good[: len(good) // 3], "PDF"),
        "fake.docx": (b"PK not really", "DOCX"),
        "binary.txt": (b"\x00\x01\x02 binary", "binary"),
        "latin.md": ("caf\xe9".encode("latin-1"), "not UTF-8"),
        "empty.txt": (b"   \n", "no text"),
    }
    for name, (data, reason) in cases.items():
        with pytest.raises(UnreadableDocument, match=reason) as caught:
            parse(data, name)
        assert caught.value.status == 422, name


def test_docx_that_unpacks_to_far_more_than_its_size_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"<a>" + b" " * (80 << 20) + b"</a>")
    with pytest.raises(UnreadableDocument, match="unpacks to"):
        parse(buffer.getvalue(), "bomb.docx")


def test_chunks_stay_under_the_word_budget_and_inside_their_section() -> None:
    body = "\n\n".join(f"Paragraph {i} " + "word " * 70 for i in range(6)) + "\n\n" + "long " * 400
    doc = parse(f"# One\n{body}\n# Two\nshort".encode(), "d.md")
    chunks = chunk_document(doc)
    assert all(len(c.text.split()) <= MAX_WORDS for c in chunks)
    assert chunks[-1].heading == "Two" and chunks[-1].text == "short"
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
