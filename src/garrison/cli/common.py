"""Helpers shared by CLI commands: settings from flags, clean error exits."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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


def fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


ConfigOption = typer.Option(None, "--config", "-c", help="Path to garrison.toml (default: ./garrison.toml, "
                            "then GARRISON_HOME/garrison.toml).", exists=True, dir_okay=False)
