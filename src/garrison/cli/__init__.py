"""The `garrison` command: one Typer app, each command group in its own module."""

from __future__ import annotations

import typer

from garrison import __version__


def _version(value: bool) -> None:
    if value:
        typer.echo(f"garrison {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    """Assemble the CLI from each concept's module (imports stay light: heavy work happens in commands)."""
    from garrison.cli import bench, docs, doctor, evals, federation, guard, models, security, serve, sizing, users

    app = typer.Typer(
        name="garrison",
        help="Self-hosted LLM platform: serve local models, guard them, and measure which to choose.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ) -> None:
        """garrison: serve, guard and measure local LLMs."""

    for module in (serve, models, security, users, guard, bench, sizing, evals, docs, doctor, federation):
        module.register(app)
    return app


def main() -> None:
    build_app()()
