"""`garrison serve`: load the models and serve the OpenAI- and Ollama-compatible APIs."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import typer

from garrison.cli.common import ConfigOption, fail, settings_from_flags

log = logging.getLogger("garrison")


def serve(
    host: str = typer.Option(None, help="Address to bind (default 127.0.0.1)."),
    port: int = typer.Option(None, help="Port to bind (default 8400)."),
    config: Path = ConfigOption,
    home: Path = typer.Option(None, help="State directory (default ~/.garrison; env GARRISON_HOME)."),
    env: str = typer.Option(None, help="Environment served: dev, staging or prod; only its keys are accepted."),
    no_auth: bool = typer.Option(False, "--no-auth", help="Disable API keys (refused unless bound to loopback)."),
    threads: int = typer.Option(None, help="Most llama.cpp threads per step (default: all usable cores)."),
    context_length: int = typer.Option(None, "--context-length", help="Context window per sequence, tokens."),
    max_concurrent: int = typer.Option(None, "--max-concurrent", help="Sequences decoded together."),
    max_queue: int = typer.Option(None, "--max-queue", help="Requests allowed to wait; beyond it 503."),
    n_gpu_layers: int = typer.Option(None, "--n-gpu-layers", help="Layers offloaded to the GPU (-1 = all)."),
    no_embeddings: bool = typer.Option(False, "--no-embeddings", help="Do not serve the embedding model."),
    no_default_model: bool = typer.Option(False, "--no-default-model", help="Serve only [[models]] from config."),
    max_body_bytes: int = typer.Option(None, "--max-body-bytes", help="Largest request body (413 beyond)."),
    log_level: str = typer.Option(None, "--log-level", help="debug, info, warning or error."),
    log_format: str = typer.Option(None, "--log-format", help="text or json."),
    tls_cert: Path = typer.Option(None, "--tls-cert", help="Serve HTTPS with this certificate chain (PEM)."),
    tls_key: Path = typer.Option(None, "--tls-key", help="The private key of --tls-cert (PEM)."),
    tls_client_ca: Path = typer.Option(
        None, "--tls-client-ca", help="Require client certificates signed by this CA bundle (mutual TLS)."
    ),
    tls_client_cert: str = typer.Option(
        None, "--tls-client-cert", help="none, optional or required (default: required with --tls-client-ca)."
    ),
) -> None:
    """Serve local models over OpenAI- and Ollama-compatible HTTP APIs."""
    engine: dict[str, Any] = {k: v for k, v in {
        "threads": threads, "context_length": context_length, "max_concurrent_sequences": max_concurrent,
        "max_queue": max_queue, "n_gpu_layers": n_gpu_layers, "embeddings": False if no_embeddings else None,
    }.items() if v is not None}
    auth: dict[str, Any] = {k: v for k, v in {"env": env, "enabled": False if no_auth else None}.items()
                            if v is not None}
    tls: dict[str, Any] = {k: v for k, v in {
        "cert_file": tls_cert, "key_file": tls_key, "client_ca_file": tls_client_ca,
        "client_cert": tls_client_cert or ("required" if tls_client_ca else None),
    }.items() if v is not None}
    settings = settings_from_flags(
        config, host=host, port=port, home=home, log_level=log_level, log_format=log_format,
        max_body_bytes=max_body_bytes, default_model=False if no_default_model else None,
        engine=engine or None, auth=auth or None,
    )
    if tls:  # flags on top of [tls] from the file, checked together
        try:
            merged = settings.tls.model_validate({**settings.tls.model_dump(exclude_unset=True), **tls})
        except ValueError as exc:
            fail(f"invalid TLS options: {exc}", code=2)
        settings = settings.model_copy(update={"tls": merged})
    from garrison.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    from garrison.security import is_loopback

    if not settings.auth.enabled and not is_loopback(settings.host):
        fail(f"--no-auth is refused when binding {settings.host}: without keys, bind only to loopback", code=2)
    run(settings)


def run(settings: Any) -> None:
    """Load everything (digest checks included), print how to connect, then serve until interrupted."""
    from garrison.api.server import build, serve_forever
    from garrison.errors import GarrisonError

    settings.ensure_home()
    try:
        app = build(settings)
    except GarrisonError as exc:
        fail(exc.message, code=2)
        return
    for info in app.state.inference.registry:
        log.info("serving %s (%s, %s, ctx %d)", info.id, info.kind, info.quantization, info.context_length)
    from garrison.security import admin_key_path

    security = app.state.security
    if security.bootstrap_key:
        saved = admin_key_path(settings)
        if sys.stderr.isatty():  # a person at a terminal; never a log file, journal or pipe
            typer.secho(f"\nCreated the first admin API key (shown once; also saved to {saved}):\n"
                        f"  {security.bootstrap_key}\n", fg=typer.colors.YELLOW, err=True)
        else:
            typer.echo(f"Created the first admin API key; it is saved in {saved} (mode 0600) and not printed "
                       "because this output is not a terminal", err=True)
    auth_note = f"auth on, env {settings.auth.env}" if security.auth_enabled else "auth OFF (loopback only)"
    from garrison.api.server import base_url

    tls_note = {"none": "", "optional": ", client certificates optional", "required": ", mutual TLS"}
    typer.echo(f"garrison listening on {base_url(settings)}  ({auth_note}{tls_note[settings.tls.client_cert]})",
               err=True)
    if getattr(app.state, "console", None) is not None:
        typer.echo(f"console at {base_url(settings)}/console  (garrison users create NAME)", err=True)
    try:
        serve_forever(app, settings)
    finally:
        security.close()


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
