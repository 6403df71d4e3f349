"""`garrison guard`: show what a guardrail policy would do to a text, for tuning policies offline."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, cast

import typer
from rich.console import Console
from rich.table import Table

from garrison.cli.common import ConfigOption, fail, settings_from_flags
from garrison.errors import GarrisonError
from garrison.settings import GuardWhere

guard_app = typer.Typer(help="Inspect and tune guardrail policies.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add `guard` to the root app."""
    app.add_typer(guard_app, name="guard")


@guard_app.command("check")
def check(
    text: str = typer.Argument(..., help="The text to check ('-' reads standard input)."),
    policy: str = typer.Option(..., "--policy", "-p", help="Policy name (built-in or [[guardrails.policies]])."),
    where: str = typer.Option("input", "--where", help="Apply the rules for: input, retrieved or output."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (text, verdicts, spans, blocked_by, score)."),
    config: Path | None = ConfigOption,
) -> None:
    """Run a policy over TEXT: the redacted text, each rule that fired, and whether it would block."""
    from garrison.guard.policies import Policies
    from garrison.guard.verdicts import Guardrails

    if where not in ("input", "retrieved", "output"):
        fail("--where must be input, retrieved or output", code=2)
    settings = settings_from_flags(config)
    content = sys.stdin.read() if text == "-" else text
    try:
        chosen = Policies(settings.guardrails).get(policy)
    except GarrisonError as exc:
        fail(exc.message, code=2)
        return
    guardrails = Guardrails(settings.guardrails)
    started = time.perf_counter()
    checked = guardrails.check(content, chosen, cast(GuardWhere, where), rehydrate=chosen.rehydrate, count=False)
    elapsed_ms = (time.perf_counter() - started) * 1000
    report = {
        "policy": chosen.name,
        "where": where,
        "action": "block" if checked.blocked_by else ("redact" if checked.text != content else "allow"),
        "blocked_by": checked.blocked_by.rule if checked.blocked_by else None,
        "text": checked.text,
        "verdicts": [v.to_dict() for v in checked.verdicts],
        "spans": [{"type": s.type, "start": s.start, "end": s.end} for s in checked.spans],
        "injection_score": checked.score,
        "ms": round(elapsed_ms, 3),
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        _print(report)
    if checked.blocked_by is not None:
        raise typer.Exit(3)


@guard_app.command("policies")
def policies(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    config: Path | None = ConfigOption,
) -> None:
    """List the policies this configuration knows, with their rules and the per-environment defaults."""
    from garrison.guard.policies import Policies

    settings = settings_from_flags(config)
    try:
        known = Policies(settings.guardrails)
    except GarrisonError as exc:
        fail(exc.message, code=2)
        return
    data: dict[str, Any] = {
        "policies": [known.get(n).model_dump(exclude_none=True) for n in known.names()],
        "defaults": settings.guardrails.defaults,
        "models": settings.guardrails.models,
    }
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    table = Table("policy", "rule", "what", "where", "action", "rehydrate", title="Guardrail policies")
    for p in data["policies"]:
        for rule in p["rules"]:
            label = rule.get("name") or f"{rule['what']}-{rule['action']}"
            table.add_row(p["name"], label, rule["what"], ",".join(rule["where"]), rule["action"],
                          str(p.get("rehydrate", False)).lower())
    console = Console()
    console.print(table)
    defaults = ", ".join(f"{env}: {name or '-'}" for env, name in data["defaults"].items())
    console.print(f"defaults per environment: {defaults}")


def _print(report: dict[str, Any]) -> None:
    console = Console(highlight=False)
    if report["blocked_by"]:
        console.print(f"[red]blocked[/red] by rule '{report['blocked_by']}' (policy {report['policy']}, "
                      f"{report['where']})")
    else:
        console.print(f"{report['action']} (policy {report['policy']}, {report['where']})")
    if report["injection_score"] is not None:
        console.print(f"injection score: {report['injection_score']:.3f}")
    table = Table("rule", "action", "found")
    for v in report["verdicts"]:
        found = ", ".join(f"{t} x{n}" for t, n in v.get("spans", {}).items())
        if "score" in v:
            found = f"score {v['score']:.3f}: {', '.join(v['signals'])}"
        table.add_row(v["rule"], v["action"], found)
    if report["verdicts"]:
        console.print(table)
    console.print("text:")
    typer.echo(report["text"])
