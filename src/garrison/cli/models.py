"""`garrison models`: list the served models, and register a local GGUF with a pinned digest."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from garrison.cli.common import ConfigOption, fail, settings_from_flags

models_app = typer.Typer(help="Manage the models garrison serves.", no_args_is_help=True)


@models_app.command("list")
def list_models(
    config: Path = ConfigOption,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show id, engine, size, digest, quantization and context of every served model; probe remote ones."""
    from rich.console import Console
    from rich.table import Table

    from garrison.engines.upstream.models import probe_models
    from garrison.errors import GarrisonError
    from garrison.registry import build_registry

    settings = settings_from_flags(config)
    try:
        registry = build_registry(settings)
        upstreams = probe_models(list(registry), settings)
    except GarrisonError as exc:
        fail(exc.message, code=2)
        return
    rows = [{**m.describe(), **({"upstream": upstreams[m.id]} if m.id in upstreams else {})} for m in registry]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="garrison models")
    for column in ("id", "kind", "engine", "quantization", "context", "size", "sha256", "path / upstreams"):
        table.add_column(column)
    for row in rows:
        where = row["path"] or "\n".join(
            f"{r['url']} {r['state']}" + (f" ({r['reason']})" if r.get("reason") else "")
            for r in row.get("upstream", {}).get("replicas", [])
        )
        size = f"{row['size_bytes'] / 1e6:.1f} MB" if row["size_bytes"] else "-"
        table.add_row(row["id"], row["kind"], row["engine"], row["quantization"], str(row["context_length"] or "-"),
                      size, (row["sha256"][:16] + "…") if row["sha256"] else "-", where)
    Console().print(table)


@models_app.command("add")
def add_model(
    model_id: str = typer.Argument(..., help="The id clients will use, e.g. qwen2.5-coder-1.5b."),
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="A local GGUF file."),
    context_length: int = typer.Option(None, "--context-length", help="Context window in tokens."),
    config_file: Path = typer.Option(Path("garrison.toml"), "--config", "-c", help="The garrison.toml to edit."),
) -> None:
    """Register a local GGUF in garrison.toml with its sha256 pinned (nothing is downloaded)."""
    from garrison.engines.gguf import inspect_gguf
    from garrison.registry import sha256_file

    resolved = path.expanduser().resolve()
    try:
        inspect_gguf(resolved)
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a GGUF we can serve"
        fail(f"{resolved} is not a readable GGUF file: {exc}", code=2)
    digest = sha256_file(resolved)
    block = ["", "[[models]]", f"id = {json.dumps(model_id)}", f"path = {json.dumps(str(resolved))}",
             f"sha256 = {json.dumps(digest)}"]
    if context_length:
        block.append(f"context_length = {context_length}")
    with config_file.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(block) + "\n")
    typer.echo(f"added {model_id} ({digest[:16]}…) to {config_file}")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
