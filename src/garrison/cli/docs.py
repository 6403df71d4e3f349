"""`garrison docs`: sync the storage roots into the documents index, inspect, relabel, remove and search it."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from garrison.cli.common import ConfigOption, fail, print_json, run_or_fail, settings_from_flags
from garrison.errors import GarrisonError

docs_app = typer.Typer(help="Private documents: sync the storage roots, list, label, remove, search.",
                       no_args_is_help=True)
JsonOption = typer.Option(False, "--json", help="Print JSON.")


def register(app: typer.Typer) -> None:
    app.add_typer(docs_app, name="docs")


@contextmanager
def _library(config: Path | None, *, embed: bool = True) -> Iterator[Any]:
    """The documents library of the configured GARRISON_HOME; errors become a one-line message."""
    from garrison.documents.library import Library

    settings = settings_from_flags(config)
    try:
        library = Library.open(settings, embed=None if embed else _no_embedding)
    except GarrisonError as exc:
        fail(exc.message, code=2)
    try:
        yield library
    finally:
        library.close()


def _no_embedding(texts: list[str]) -> Any:
    raise AssertionError("this command embeds nothing")


def _audit(config: Path | None, action: str, summary: str, **details: Any) -> None:
    """Record a documents change in the audit log, by the local user (never document text)."""
    from garrison.documents.library import Change, audit_change
    from garrison.security import connect

    security = connect(settings_from_flags(config))
    try:
        audit_change(security.audit, Change(action, summary, details), actor=f"cli:{getpass.getuser()}")
    finally:
        security.close()


@docs_app.command("sync")
def sync(config: Path = ConfigOption, as_json: bool = JsonOption) -> None:
    """Index new and changed files of every root, drop deleted ones; unreadable files are reported, skipped."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with _library(config) as library:
        if as_json or not Console(stderr=True).is_terminal:
            report = run_or_fail(library.sync)
        else:
            columns = (TextColumn("[bold]sync[/bold]"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       TextColumn("{task.description}", style="dim"))
            with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
                task = bar.add_task("", total=None)

                def step(path: str, done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total, description=path)

                report = run_or_fail(lambda: library.sync(step))
    if report.changed:
        _audit(config, "sync", report.summary(), added=len(report.added), updated=len(report.updated),
               removed=len(report.removed))
    if as_json:
        print_json(report.to_dict())
    else:
        console = Console()
        console.print(
            f"{len(report.added)} added, {len(report.updated)} updated, {len(report.removed)} removed, "
            f"{report.unchanged} unchanged, {len(report.failed)} failed, {len(report.refused)} refused "
            f"({report.chunks} chunks, {report.seconds:.1f} s)"
        )
        for item in report.failed:
            console.print(f"[yellow]skipped[/yellow] {item['path']}: {item['reason']}", highlight=False)
        for item in report.refused:
            console.print(f"[red]refused[/red] {item['path']}: {item['reason']}", highlight=False)
    if report.failed or report.refused:
        raise typer.Exit(1)


@docs_app.command("list")
def list_documents(
    config: Path = ConfigOption,
    collection: str | None = typer.Option(None, "--collection", help="Only this collection."),
    clearance: str = typer.Option("restricted", "--clearance", help="Show what this clearance level sees."),
    as_json: bool = JsonOption,
) -> None:
    """List indexed documents with their collection, kind, label, size and chunk count."""
    with _library(config, embed=False) as library:
        access = run_or_fail(lambda: library.access(clearance, [collection] if collection else None))
        documents = [d.to_dict() for d in library.visible(access)]
    if as_json:
        print_json(documents)
        return
    table = Table(title="documents")
    for column in ("id", "collection", "path", "kind", "label", "title", "size", "chunks"):
        table.add_column(column, overflow="fold")
    for d in documents:
        table.add_row(d["id"], d["collection"], d["path"], d["kind"], d["label"], d["title"], str(d["size"]),
                      str(d["chunks"]))
    Console().print(table)


@docs_app.command("show")
def show(
    ref: str = typer.Argument(..., metavar="DOCUMENT", help="A document id, collection/path, or a file path."),
    config: Path = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Show one document's record and its chunks (page, heading, text)."""
    with _library(config, embed=False) as library:
        record = run_or_fail(lambda: library.document(ref))
        chunks = library.index.chunks_of(record.id)
    if as_json:
        print_json({**record.to_dict(), "chunk_list": chunks})
        return
    console = Console()
    for key, value in record.to_dict().items():
        console.print(f"[bold]{key}[/bold]: {value}", highlight=False)
    for chunk in chunks:
        where = " · ".join(x for x in (f"page {chunk['page']}" if chunk["page"] else "", chunk["heading"] or "") if x)
        console.print(f"\n[dim]#{chunk['ordinal']} {where}[/dim]\n{chunk['text']}", highlight=False)


@docs_app.command("label")
def label(
    ref: str = typer.Argument(..., metavar="DOCUMENT", help="A document id, collection/path, or a file path."),
    level: str = typer.Argument(..., metavar="LABEL", help="public, internal, confidential or restricted."),
    config: Path = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Relabel a document (kept across later edits of its file); the next query sees the new label."""
    with _library(config, embed=False) as library:
        before, after = run_or_fail(lambda: library.relabel(ref, level))
    _audit(config, "label", f"document {after.id} ({after.collection}) relabelled {before.label} -> {after.label}",
           document_id=after.id, collection=after.collection, label=after.label, previous_label=before.label)
    if as_json:
        print_json({**after.to_dict(), "previous_label": before.label})
    else:
        typer.echo(f"{after.id} {after.collection}/{after.path}: {before.label} -> {after.label}")


@docs_app.command("remove")
def remove(
    ref: str = typer.Argument(..., metavar="DOCUMENT", help="A document id, collection/path, or a file path."),
    delete_file: bool = typer.Option(False, "--delete-file", help="Delete the file from its root too."),
    config: Path = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Remove a document from the index; without --delete-file later syncs leave its file out."""
    with _library(config, embed=False) as library:
        record = run_or_fail(lambda: library.remove(ref, delete_file=delete_file))
    how = "file deleted" if delete_file else "excluded from sync"
    _audit(config, "remove", f"document {record.id} ({record.collection}, {record.label}) removed, {how}",
           document_id=record.id, collection=record.collection, label=record.label, file_deleted=delete_file)
    if as_json:
        print_json({**record.to_dict(), "file_deleted": delete_file})
    else:
        typer.echo(f"removed {record.id} {record.collection}/{record.path} ({how})")


@docs_app.command("search")
def search(
    query: str = typer.Argument(..., help="What to look for."),
    clearance: str = typer.Option("restricted", "--clearance", help="Preview what this clearance level sees."),
    collections: str | None = typer.Option(None, "--collections", help="Comma-separated collections (default all)."),
    k: int = typer.Option(5, "--k", "-k", min=1, max=100, help="How many chunks."),
    mode: str = typer.Option("hybrid", "--mode", help="hybrid, keyword or vector."),
    config: Path = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Search the index as a clearance level would (hybrid keyword + vector ranking)."""
    if mode not in ("hybrid", "keyword", "vector"):
        fail("--mode must be hybrid, keyword or vector", code=2)
    names = [c.strip() for c in collections.split(",") if c.strip()] if collections else None
    with _library(config, embed=mode != "keyword") as library:
        access = run_or_fail(lambda: library.access(clearance, names))
        hits = run_or_fail(lambda: library.search(query, access, k, mode))
    if as_json:
        print_json([h.to_dict() for h in hits])
        return
    console = Console()
    for i, h in enumerate(hits, start=1):
        where = " · ".join(x for x in (f"page {h.page}" if h.page else "", h.heading or "") if x)
        console.print(f"[bold][{i}][/bold] {h.title} [dim]{h.collection}/{h.path} {where} · {h.label} · "
                      f"{h.score:.4f}[/dim]", highlight=False)
        console.print(f"    {' '.join(h.text.split())[:300]}", highlight=False)
    if not hits:
        console.print(f"no chunks visible to clearance '{clearance}' match")
