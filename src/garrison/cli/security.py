"""`garrison keys`, `garrison usage` and `garrison audit`: work directly on the local store."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from garrison.errors import GarrisonError

T = TypeVar("T")

keys_app = typer.Typer(help="Create, list, revoke and rotate API keys.", no_args_is_help=True)
audit_app = typer.Typer(help="Verify and export the tamper-evident audit log.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add `keys`, `usage` and `audit` to the root app."""
    app.add_typer(keys_app, name="keys")
    app.command("usage")(usage)
    app.add_typer(audit_app, name="audit")


@contextmanager
def _security() -> Iterator[Any]:
    """Open the store named by the settings (GARRISON_HOME respected); errors become a one-line message."""
    from garrison.security import connect
    from garrison.settings import load_settings

    try:
        security = connect(load_settings())
    except GarrisonError as exc:
        _fail(exc.message, code=2)
    try:
        yield security
    finally:
        security.close()


def _run(action: Callable[[], T]) -> T:
    try:
        return action()
    except GarrisonError as exc:
        _fail(exc.message)


def _fail(message: str, code: int = 1) -> NoReturn:
    Console(stderr=True).print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@keys_app.command("create")
def create(
    name: str = typer.Option(..., "--name", help="Who or what the key is for."),
    env: str | None = typer.Option(
        None, "--env", help="dev, staging or prod (default: the configured auth.env)."
    ),
    models: str = typer.Option("*", "--models", help="Comma-separated model ids, or * for all."),
    scopes: str = typer.Option(
        "chat,completions,embeddings",
        "--scopes",
        help="Comma-separated: chat, completions, embeddings, metrics, documents, documents:write, admin.",
    ),
    clearance: str = typer.Option(
        "public", "--clearance", help="public, internal, confidential or restricted."
    ),
    collections: str = typer.Option(
        "*", "--collections", help="Comma-separated document collections the key may read, or * for all."
    ),
    rpm: int | None = typer.Option(None, "--rpm", min=1, help="Requests per minute (default: unlimited)."),
    tpm: int | None = typer.Option(None, "--tpm", min=1, help="Tokens per minute (default: unlimited)."),
    daily_tokens: int | None = typer.Option(None, "--daily-tokens", min=1, help="Tokens per UTC day."),
    expires: str | None = typer.Option(
        None, "--expires", help="A duration (30d, 12h) or a date (YYYY-MM-DD)."
    ),
    policy: str | None = typer.Option(
        None, "--policy", help="Guardrail policy (see `garrison guard check`); default: the environment's."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object (id, key, name, env, ...)."),
) -> None:
    """Create an API key and print its secret (shown once, never stored)."""
    from garrison.guard.policies import Policies
    from garrison.security.principal import Limits
    from garrison.settings import load_settings
    from garrison.store.times import parse_expiry

    if policy is not None:
        _run(lambda: Policies(load_settings().guardrails).check_name(policy))
    with _security() as security:
        now = security.guard.clock()
        issued = _run(
            lambda: security.keys.create(
                name=name,
                env=env or security.env,
                scopes=_csv(scopes),
                models=_csv(models),
                clearance=clearance,
                limits=Limits(rpm, tpm, daily_tokens),
                expires_at=parse_expiry(expires, now, param="--expires") if expires else None,
                collections=_csv(collections),
                policy=policy,
            )
        )
        if as_json:
            _print_json(issued.to_dict(now))
            return
        console = Console()
        record = issued.record
        console.print(
            f"Created key [bold]{record.id}[/bold] '{record.name}' for env [bold]{record.env}[/bold]."
        )
        console.print("Secret (shown once; store it now):")
        typer.echo(issued.token)


@keys_app.command("list")
def list_keys(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List keys with their permissions, limits and status (never secrets)."""
    with _security() as security:
        now = security.guard.clock()
        keys = [k.to_dict(now) for k in security.keys.all()]
    if as_json:
        _print_json(keys)
        return
    table = Table(title="API keys")
    table.add_column("id", no_wrap=True)
    for column in ("name", "env", "scopes", "models", "clearance", "policy", "limits", "status", "expires"):
        table.add_column(column, overflow="fold")
    for k in keys:
        limits = [
            f"{k['rpm']} rpm" if k["rpm"] else "",
            f"{k['tpm']} tpm" if k["tpm"] else "",
            f"{k['daily_tokens']}/day" if k["daily_tokens"] else "",
        ]
        table.add_row(
            k["id"],
            k["name"],
            k["env"],
            ", ".join(k["scopes"]),
            ", ".join(k["models"]),
            k["clearance"],
            k["policy"] or "-",
            " ".join(x for x in limits if x) or "-",
            k["status"],
            (k["expires_at"] or "-")[:10],
        )
    Console().print(table)


@keys_app.command("revoke")
def revoke(
    key_id: str = typer.Argument(..., metavar="ID", help="The key id (see `garrison keys list`)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Revoke a key immediately (it stays listed and audited)."""
    with _security() as security:
        record = _run(lambda: security.keys.revoke(key_id))
        if as_json:
            _print_json(record.to_dict(security.guard.clock()))
        else:
            typer.echo(f"revoked {record.id} ({record.name})")


@keys_app.command("rotate")
def rotate(
    key_id: str = typer.Argument(..., metavar="ID", help="The key id."),
    grace: str | None = typer.Option(
        None, "--grace", help="How long the old secret keeps working, e.g. 10m."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (id, key, ...)."),
) -> None:
    """Give a key a new secret (printed once); the old one stops now or after --grace."""
    from garrison.store.times import parse_duration, to_iso

    with _security() as security:
        now = security.guard.clock()
        issued = _run(lambda: security.keys.rotate(key_id, parse_duration(grace, param="--grace") if grace else 0.0))
        if as_json:
            _print_json(issued.to_dict(now))
            return
        until = f"until {to_iso(now + parse_duration(grace))}" if grace else "no longer (it stopped now)"
        Console().print(f"Rotated key [bold]{key_id}[/bold]; the old secret works {until}.")
        Console().print("New secret (shown once):")
        typer.echo(issued.token)


def usage(
    key: str | None = typer.Option(None, "--key", help="Only this key id."),
    since: str | None = typer.Option(None, "--since", help="First day, YYYY-MM-DD."),
    until: str | None = typer.Option(None, "--until", help="Day after the last, YYYY-MM-DD."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show requests and tokens per key, model and UTC day."""
    from garrison.store.times import parse_when, utc_day

    with _security() as security:
        rows = _run(
            lambda: security.usage.rows(
                key_id=key,
                since=utc_day(parse_when(since, param="--since")) if since else None,
                until=utc_day(parse_when(until, param="--until")) if until else None,
            )
        )
    if as_json:
        _print_json([r.to_dict() for r in rows])
        return
    table = Table("day", "key", "name", "model", "requests", "prompt", "completion", "total", title="Usage")
    for r in rows:
        table.add_row(
            r.day,
            r.key_id,
            r.key_name or "-",
            r.model,
            str(r.requests),
            str(r.prompt_tokens),
            str(r.completion_tokens),
            str(r.total_tokens),
        )
    Console().print(table)


@audit_app.command("verify")
def verify(
    expect_head: str | None = typer.Option(
        None, "--expect-head", metavar="HASH",
        help="A head hash kept elsewhere earlier: it must still be in the chain (catches truncation).",
    ),
    min_records: int | None = typer.Option(
        None, "--min-records", min=0, metavar="N", help="The record count kept with that head: at least N."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Recompute the hash chain and signatures; exit 1 naming the first bad record, or a truncation."""
    if expect_head is not None and not re.fullmatch(r"[0-9a-f]{64}", expect_head.strip().lower()):
        _fail("--expect-head must be a record hash: 64 hex digits, as `audit verify` prints the head", code=2)
    with _security() as security:
        result = security.audit.verify()
        anchor = security.audit.anchor_problem(expect_head, min_records) if result.ok else None
    ok = result.ok and anchor is None
    message = result.describe() if anchor is None else f"audit log TRUNCATED: {anchor}"
    if ok and (expect_head or min_records is not None):
        message += "; anchor matched"
    if as_json:
        _print_json({**result.to_dict(), "ok": ok, "truncation": anchor, "message": message})
    else:
        typer.echo(message, err=not ok)
    if not ok:
        raise typer.Exit(1)


@audit_app.command("export")
def export(
    since: str | None = typer.Option(None, "--since", help="Date or ISO date-time (inclusive)."),
    until: str | None = typer.Option(None, "--until", help="Date or ISO date-time (exclusive)."),
    fmt: str = typer.Option("jsonl", "--format", help="jsonl or csv."),
    output: Path | None = typer.Option(None, "--output", "-o", help="File to write (default: stdout)."),
) -> None:
    """Export audit records with their chain hashes, as JSON Lines or CSV."""
    from garrison.audit.export import FORMATS
    from garrison.audit.export import export as write
    from garrison.store.times import parse_when

    if fmt not in FORMATS:
        _fail(f"--format must be one of {', '.join(FORMATS)}", code=2)
    start = _run(lambda: parse_when(since, param="--since")) if since else None
    end = _run(lambda: parse_when(until, param="--until")) if until else None
    with _security() as security:
        records = security.audit.records(since=start, until=end)
        if output is None:
            count = write(records, sys.stdout, fmt)
        else:
            with output.open("w", encoding="utf-8", newline="") as handle:
                count = write(records, handle, fmt)
    if output is not None:
        typer.echo(f"exported {count} audit records to {output}", err=True)
