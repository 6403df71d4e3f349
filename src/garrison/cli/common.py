"""Helpers shared by CLI commands: settings from flags, clean error exits."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError

from garrison.errors import GarrisonError
from garrison.settings import Settings, load_settings


def settings_from_flags(config: Path | None = None, **overrides: Any) -> Settings:
    """Load settings with CLI flags on top; a bad configuration exits 2 with the reason."""
    if config is not None:
        os.environ["GARRISON_CONFIG"] = str(config)
    try:
        return load_settings(**overrides)
    except ValidationError as exc:
        fail(f"invalid configuration: {exc}", code=2)
    except GarrisonError as exc:
        fail(exc.message, code=2)
    raise AssertionError("unreachable")


def fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


T = TypeVar("T")


def run_or_fail(action: Callable[[], T]) -> T:
    """Run a command's action; a GarrisonError becomes a one-line message and exit status 1."""
    try:
        return action()
    except GarrisonError as exc:
        fail(exc.message)


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


ConfigOption = typer.Option(None, "--config", "-c", help="Path to garrison.toml (default: ./garrison.toml, "
                            "then GARRISON_HOME/garrison.toml).", exists=True, dir_okay=False)
