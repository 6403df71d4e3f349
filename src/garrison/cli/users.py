"""`garrison users`: console users (create, list, disable, enable, reset) on the local store."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.table import Table

from garrison.cli.security import _csv, _fail, _print_json, _run, _security

users_app = typer.Typer(help="Create, list, disable and reset console users.", no_args_is_help=True)

_PASSWORD_STDIN = typer.Option(False, "--password-stdin", help="Read the password from standard input.")
_GENERATE = typer.Option(False, "--generate", help="Generate a random password and print it once.")


def register(app: typer.Typer) -> None:
    """Add `users` to the root app."""
    app.add_typer(users_app, name="users")


def _password(from_stdin: bool, generate: bool) -> tuple[str, bool]:
    """The new password and whether it was generated (so it must be shown once)."""
    from garrison.security.users import new_password

    if from_stdin and generate:
        _fail("choose one of --password-stdin and --generate", code=2)
    if generate:
        return new_password(), True
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n"), False
    if not sys.stdin.isatty():
        _fail("no terminal to ask for a password: use --password-stdin or --generate", code=2)
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True), False


@users_app.command("create")
def create(
    username: str = typer.Argument(..., help="Sign-in name (letters, digits, . _ @ + -)."),
    role: str = typer.Option("user", "--role", help="user, or admin (sees the console's administration)."),
    scopes: str = typer.Option("chat", "--scopes", help="Comma-separated: chat, completions, embeddings, ..."),
    models: str = typer.Option("*", "--models", help="Comma-separated model ids, or * for all."),
    clearance: str = typer.Option("public", "--clearance", help="public, internal, confidential or restricted."),
    collections: str = typer.Option(
        "*", "--collections", help="Comma-separated document collections the user may read, or * for all."
    ),
    rpm: int | None = typer.Option(None, "--rpm", min=1, help="Requests per minute (default: unlimited)."),
    tpm: int | None = typer.Option(None, "--tpm", min=1, help="Tokens per minute (default: unlimited)."),
    daily_tokens: int | None = typer.Option(None, "--daily-tokens", min=1, help="Tokens per UTC day."),
    env: str | None = typer.Option(None, "--env", help="dev, staging or prod (default: the configured auth.env)."),
    display_name: str | None = typer.Option(None, "--name", help="Name shown in the console."),
    password_stdin: bool = _PASSWORD_STDIN,
    generate: bool = _GENERATE,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Create a local console user with an Argon2id-hashed password."""
    from garrison.security.principal import Limits
    from garrison.security.users import UserStore, parse_grants

    password, generated = _password(password_stdin, generate)
    with _security() as security:
        users = UserStore(security.store, security.guard.clock)
        grants = _run(lambda: parse_grants(
            role=role, scopes=_csv(scopes), models=_csv(models), clearance=clearance,
            limits=Limits(rpm, tpm, daily_tokens), collections=_csv(collections),
        ))
        user = _run(lambda: users.create(
            username=username, env=env or security.env, grants=grants, password=password,
            display_name=display_name,
        ))
    if as_json:
        _print_json({**user.to_dict(), **({"password": password} if generated else {})})
        return
    typer.echo(f"created {user.role} '{user.username}' ({user.id}) in env {user.env}")
    if generated:
        typer.echo("Password (shown once):")
        typer.echo(password)


@users_app.command("list")
def list_users(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List users with their role, permissions and status (never passwords)."""
    from garrison.security.users import UserStore

    with _security() as security:
        users = [u.to_dict() for u in UserStore(security.store, security.guard.clock).all()]
    if as_json:
        _print_json(users)
        return
    table = Table(title="Console users")
    for column in ("username", "id", "env", "role", "source", "scopes", "models", "clearance", "collections", "status",
                   "last login"):
        table.add_column(column, overflow="fold")
    for u in users:
        table.add_row(
            u["username"], u["id"], u["env"], u["role"], u["source"], ", ".join(u["scopes"]),
            ", ".join(u["models"]), u["clearance"], ", ".join(u["collections"]), u["status"],
            (u["last_login_at"] or "-")[:16],
        )
    Console().print(table)


@users_app.command("disable")
def disable(
    username: str = typer.Argument(..., help="The user's name."),
    env: str | None = typer.Option(None, "--env", help="Environment (default: the configured auth.env)."),
) -> None:
    """Disable a user: its sessions end now and its personal API keys are revoked."""
    from garrison.console.sessions import end_user_sessions
    from garrison.security.users import UserStore

    with _security() as security:
        users = UserStore(security.store, security.guard.clock)
        user = _run(lambda: users.disable(users.named(env or security.env, username).id))
        ended = end_user_sessions(security.store, user.id, security.guard.clock())
    typer.echo(f"disabled '{user.username}'; ended {ended} sessions and revoked its personal keys")


@users_app.command("enable")
def enable(
    username: str = typer.Argument(..., help="The user's name."),
    env: str | None = typer.Option(None, "--env", help="Environment (default: the configured auth.env)."),
) -> None:
    """Let a disabled user sign in again."""
    from garrison.security.users import UserStore

    with _security() as security:
        users = UserStore(security.store, security.guard.clock)
        user = _run(lambda: users.enable(users.named(env or security.env, username).id))
    typer.echo(f"enabled '{user.username}'")


@users_app.command("reset")
def reset(
    username: str = typer.Argument(..., help="The user's name."),
    env: str | None = typer.Option(None, "--env", help="Environment (default: the configured auth.env)."),
    password_stdin: bool = _PASSWORD_STDIN,
    generate: bool = _GENERATE,
) -> None:
    """Give a local user a new password; its sessions end now."""
    from garrison.console.sessions import end_user_sessions
    from garrison.security.users import UserStore

    password, generated = _password(password_stdin, generate)
    with _security() as security:
        users = UserStore(security.store, security.guard.clock)
        user = _run(lambda: users.set_password(users.named(env or security.env, username).id, password))
        ended = end_user_sessions(security.store, user.id, security.guard.clock())
    typer.echo(f"reset the password of '{user.username}'; ended {ended} sessions")
    if generated:
        typer.echo("New password (shown once):")
        typer.echo(password)
