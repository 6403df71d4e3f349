"""Document formats: text, Markdown (front matter), HTML, PDF (page numbers), DOCX, parsed into sections."""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import PurePosixPath
from typing import Any

import yaml  # no PyYAML stubs in the venv

from garrison.errors import UnreadableDocument, UnsupportedDocument
from garrison.security.principal import CLEARANCES

KINDS: dict[str, str] = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".docx": "docx",
}
MEDIA_TYPES: dict[str, str] = {
    "text": "text/plain",
    "markdown": "text/markdown",
    "html": "text/html",
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}
_DOCX_EXPANSION = 50  # a DOCX may unpack to at most this many times its size (zip bombs are refused)


@dataclass(frozen=True, slots=True)
class Section:
    """A run of text with one position: a PDF page, or the heading path it sits under."""

    text: str
    page: int | None = None
    heading: str | None = None


@dataclass(slots=True)
class ParsedDocument:
    """What a parser found: the kind, a title, the text by section, and a label the file itself declares."""

    kind: str
    title: str
    sections: list[Section] = field(default_factory=list)
    label: str | None = None
    pages: int | None = None


def kind_of(name: str) -> str:
    """The document kind of a file name by its extension; 415 naming the supported ones otherwise."""
    suffix = PurePosixPath(name).suffix.lower()
    kind = KINDS.get(suffix)
    if kind is None:
        supported = ", ".join(sorted(KINDS))
        raise UnsupportedDocument(
            f"'{PurePosixPath(name).name}' is not a supported document type (supported: {supported})",
            param="file",
        )
    return kind


def parse(data: bytes, name: str) -> ParsedDocument:
    """Parse a file's bytes by its name's kind; UnreadableDocument (422) says why when it cannot be read."""
    kind = kind_of(name)
    stem = PurePosixPath(name).stem
    parser = {"text": _text, "markdown": _markdown, "html": _html, "pdf": _pdf, "docx": _docx}[kind]
    doc = parser(data, stem)
    doc.sections = [s for s in doc.sections if s.text.strip()]
    if not doc.sections:
        raise UnreadableDocument(f"'{PurePosixPath(name).name}' contains no text to index")
    return doc


def _decode(data: bytes, kind: str) -> str:
    if b"\x00" in data[:8192]:
        raise UnreadableDocument(f"the file is binary, not {kind} text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableDocument(f"the file is not UTF-8 text (byte {exc.start} is invalid)") from None


def _text(data: bytes, stem: str) -> ParsedDocument:
    text = _decode(data, "plain")
    return ParsedDocument("text", stem, [Section(text)])


_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.DOTALL)
_ATX = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^[ \t]{0,3}(```|~~~)")


def front_matter(text: str) -> tuple[dict[str, Any], str]:
    """A Markdown file's YAML front matter (empty when none) and the body after it."""
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    try:
        meta = yaml.safe_load(match[1]) or {}
    except yaml.YAMLError as exc:
        raise UnreadableDocument(f"the front matter is not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(meta, dict):
        raise UnreadableDocument("the front matter is not a YAML mapping")
    return meta, text[match.end() :]


def _markdown(data: bytes, stem: str) -> ParsedDocument:
    meta, body = front_matter(_decode(data, "Markdown"))
    label = meta.get("classification")
    if label is not None:
        label = str(label).strip().lower()
        if label not in CLEARANCES:
            raise UnreadableDocument(
                f"front matter classification '{meta.get('classification')}' is not one of {', '.join(CLEARANCES)}"
            )
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    lines: list[str] = []
    first_h1: str | None = None
    fenced = False

    def flush() -> None:
        if lines:
            sections.append(Section("\n".join(lines), heading=" > ".join(h for _, h in stack) or None))
            lines.clear()

    for line in body.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        heading = None if fenced else _ATX.match(line)
        if heading is None:
            lines.append(line)
            continue
        flush()
        level, text = len(heading[1]), heading[2].strip()
        stack = [(lvl, h) for lvl, h in stack if lvl < level] + [(level, text)]
        if level == 1 and first_h1 is None:
            first_h1 = text
    flush()
    title = str(meta.get("title") or first_h1 or stem)
    return ParsedDocument("markdown", title, sections, label=label)


class _HtmlText(HTMLParser):
    """Visible text by heading (h1-h6), skipping scripts, styles and templates."""

    _SKIP = frozenset({"script", "style", "noscript", "template", "head"})
    _BLOCK = frozenset({"p", "div", "li", "br", "tr", "section", "article", "blockquote", "pre", "table", "ul", "ol"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.sections: list[Section] = []
        self._skip = 0
        self._in_title = False
        self._heading_level: int | None = None
        self._heading_text: list[str] = []
        self._stack: list[tuple[int, str]] = []
        self._buffer: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self._SKIP:
            self._skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self._flush()
            self._heading_level, self._heading_text = int(tag[1]), []
        elif tag in self._BLOCK:
            self._buffer.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif re.fullmatch(r"h[1-6]", tag) and self._heading_level is not None:
            text = " ".join("".join(self._heading_text).split())
            level = self._heading_level
            self._stack = [(lvl, h) for lvl, h in self._stack if lvl < level] + [(level, text)]
            self._heading_level = None
            if level == 1 and not self.title:
                self.title = text
        elif tag in self._BLOCK:
            self._buffer.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif self._skip:
            return
        elif self._heading_level is not None:
            self._heading_text.append(data)
        else:
            self._buffer.append(data)

    def _flush(self) -> None:
        text = "".join(self._buffer).strip()
        if text:
            self.sections.append(Section(text, heading=" > ".join(h for _, h in self._stack) or None))
        self._buffer = []

    def close(self) -> None:
        super().close()
        self._flush()


def _html(data: bytes, stem: str) -> ParsedDocument:
    parser = _HtmlText()
    parser.feed(_decode(data, "HTML"))
    parser.close()
    return ParsedDocument("html", " ".join(parser.title.split()) or stem, parser.sections)


def _pdf(data: bytes, stem: str) -> ParsedDocument:
    from pypdf import PdfReader

    if not data.lstrip()[:5] == b"%PDF-":
        raise UnreadableDocument("the file is not a PDF (no %PDF- header)")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise UnreadableDocument("the PDF is encrypted with a password")
        pages = [(number, page.extract_text() or "") for number, page in enumerate(reader.pages, start=1)]
        title = reader.metadata.title if reader.metadata and reader.metadata.title else None
    except UnreadableDocument:
        raise
    except Exception as exc:  # pypdf raises many types (PdfReadError, KeyError, zlib.error...) on damaged files
        raise UnreadableDocument(f"the PDF is damaged and cannot be read ({type(exc).__name__}: {exc})") from None
    if pages and not any(text.strip() for _, text in pages):
        raise UnreadableDocument("the PDF has no extractable text (scanned pages need OCR first)")
    return ParsedDocument(
        "pdf", str(title).strip() or stem if title else stem, [Section(t, page=n) for n, t in pages], pages=len(pages)
    )


def _docx(data: bytes, stem: str) -> ParsedDocument:
    import docx
    from docx.table import Table

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile:
        raise UnreadableDocument("the file is not a DOCX (not a zip archive)") from None
    if unpacked > max(_DOCX_EXPANSION * len(data), 1 << 20):
        raise UnreadableDocument(f"the DOCX unpacks to {unpacked} bytes, {unpacked // max(len(data), 1)}x its size")
    try:
        document = docx.Document(io.BytesIO(data))
        blocks = list(document.iter_inner_content())
        title = document.core_properties.title or ""
    except Exception as exc:  # python-docx raises KeyError, ValueError, lxml errors... on damaged files
        raise UnreadableDocument(f"the DOCX is damaged and cannot be read ({type(exc).__name__}: {exc})") from None
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    lines: list[str] = []

    def flush() -> None:
        if lines:
            sections.append(Section("\n".join(lines), heading=" > ".join(h for _, h in stack) or None))
            lines.clear()

    for block in blocks:
        if isinstance(block, Table):
            lines.extend(" | ".join(cell.text.strip() for cell in row.cells) for row in block.rows)
            continue
        text = block.text.strip()
        style = block.style.name if block.style is not None and block.style.name else ""
        level = _heading_level(style)
        if style == "Title" and text:
            title = title or text
        elif level is not None and text:
            flush()
            stack = [(lvl, h) for lvl, h in stack if lvl < level] + [(level, text)]
        elif text:
            lines.append(text)
    flush()
    return ParsedDocument("docx", title.strip() or stem, sections)


def _heading_level(style: str) -> int | None:
    match = re.fullmatch(r"Heading ([1-9])", style)
    return int(match[1]) if match else None
