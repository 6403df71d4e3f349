"""Running the app with uvicorn: in the foreground (`garrison serve`) or in a background thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from garrison.api.app import create_app
from garrison.service import InferenceService
from garrison.settings import Settings


def build(settings: Settings) -> FastAPI:
    """Load security and models (digests checked), then build the app: the slow part of start-up."""
    from garrison.security import setup

    security = setup(settings)
    inference = InferenceService.from_settings(settings)
    return create_app(settings, inference, security)


def uvicorn_config(app: FastAPI, settings: Settings, sock_port: int | None = None) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port if sock_port is None else sock_port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
    )


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def background_server(settings: Settings, app: FastAPI | None = None) -> Iterator[str]:
    """Serve garrison in a thread on loopback (port 0 picks a free one); yields the base URL.

    uvicorn installs signal handlers only on the main thread, so a background server leaves them alone.
    """
    app = app if app is not None else build(settings)
    port = settings.port or _free_port(settings.host)
    server = uvicorn.Server(uvicorn_config(app, settings, port))
    thread = threading.Thread(target=server.run, name="garrison-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("garrison server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{settings.host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        if getattr(app.state, "security", None) is not None:
            app.state.security.close()
