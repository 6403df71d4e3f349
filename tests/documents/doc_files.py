"""Real documents of every format, written by the tests (fpdf2 for PDF, python-docx for DOCX)."""

from __future__ import annotations

from pathlib import Path

from garrison.settings import Settings, load_settings


def write_pdf(path: Path, pages: list[str], title: str | None = None) -> Path:
    """A real PDF, one page per text, with a /Title when given."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=11)
    if title:
        pdf.set_title(title)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 6, text)
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))
    return path


def write_docx(path: Path, title: str, sections: list[tuple[str, str]], table: list[list[str]] | None = None) -> Path:
    """A real DOCX: a Title paragraph, then Heading 1 + body paragraph per section, then an optional table."""
    import docx

    document = docx.Document()
    document.add_paragraph(title, style="Title")
    for heading, body in sections:
        document.add_heading(heading, level=1)
        document.add_paragraph(body)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    path.parent.mkdir(parents=True, exist_ok=True)
    document.save(str(path))
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def library_settings(home: Path, roots: list[dict[str, object]], **documents: object) -> Settings:
    return load_settings(home=home, documents={"roots": roots, **documents})
