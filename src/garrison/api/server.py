"""Running the app with uvicorn: in the foreground (`garrison serve`) or in a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from garrison.api.app import create_app
from garrison.errors import ConfigError
from garrison.service import InferenceService
from garrison.settings import Settings


def build(settings: Settings) -> FastAPI:
    """Load security and models (digests checked), then build the app: the slow part of start-up."""
    from garrison.documents.knowledge import attach_documents
    from garrison.security import setup

    security = setup(settings)
    inference = InferenceService.from_settings(settings)
    documents = attach_documents(settings, inference, security.store)
    return create_app(settings, inference, security, documents, owns_security=True)


# After the drain bound, streams still open get their error event and end: this much longer for that.
_ABORT_GRACE_S = 5.0


def tls_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's TLS arguments from `[tls]`: HTTPS, and client certificates checked against a CA (mutual TLS)."""
    tls = settings.tls
    if tls.cert_file is None:
        return {}
    for path in (tls.cert_file, tls.key_file, tls.client_ca_file):
        if path is not None and not path.is_file():
            raise ConfigError(f"TLS file {path} does not exist")
    requirement = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
    return {
        "ssl_certfile": str(tls.cert_file), "ssl_keyfile": str(tls.key_file),
        "ssl_ca_certs": str(tls.client_ca_file) if tls.client_ca_file else None,
        "ssl_cert_reqs": requirement[tls.client_cert],
    }


def base_url(settings: Settings, port: int | None = None) -> str:
    scheme = "https" if settings.tls.enabled else "http"
    return f"{scheme}://{settings.host}:{settings.port if port is None else port}"


def uvicorn_config(app: FastAPI, settings: Settings, sock_port: int | None = None) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port if sock_port is None else sock_port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_drain_s + _ABORT_GRACE_S + 0.999),
        **tls_options(settings),
    )


class DrainingServer(uvicorn.Server):
    """uvicorn that drains on shutdown: no new connections, in-flight requests get `shutdown_drain_s` to
    finish, then every generation still running ends with a clear error (503 `engine_unavailable`), and the
    lifespan closes the engines and the store.

    `freeze_heap` (the foreground server, one per process): once started, what start-up built (modules, the
    app, settings, the models' metadata) moves out of the garbage collector's reach (`gc.freeze`), so a full
    collection scans only what requests made since: it takes microseconds instead of tens of milliseconds,
    which would otherwise land on whichever requests were running.
    """

    def __init__(self, config: uvicorn.Config, app, drain_s: float, *, freeze_heap: bool = False) -> None:
        super().__init__(config)
        self._app = app
        self._drain_s = drain_s
        self._freeze_heap = freeze_heap

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self._freeze_heap:
            gc.collect()  # start-up's garbage first: frozen objects are never collected
            gc.freeze()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self._drain_s, self._abort)
        try:
            await super().shutdown(sockets)
        finally:
            timer.cancel()

    def _abort(self) -> None:
        from garrison.errors import EngineUnavailable

        logging.getLogger("garrison").warning(
            "shutdown: requests still running after %.0f s are ended", self._drain_s)
        self._app.state.inference.abort(EngineUnavailable("the server is shutting down"))


def serve_forever(app, settings: Settings) -> None:
    """Serve in the foreground until SIGTERM or Ctrl-C, drain, close, and return (exit status 0)."""
    server = DrainingServer(uvicorn_config(app, settings), app, settings.shutdown_drain_s, freeze_heap=True)
    # uvicorn re-raises the signal it caught once it has shut down; with these handlers that only asks the
    # server to exit (a no-op then) instead of a KeyboardInterrupt traceback (Ctrl-C) or death by SIGTERM.
    # A signal that arrives before uvicorn has installed its own handlers stops the server as soon as it starts.
    def stop(*_: object) -> None:
        server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
    server = DrainingServer(uvicorn_config(app, settings, port), app, settings.shutdown_drain_s)
    thread = threading.Thread(target=server.run, name="garrison-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("garrison server did not start")
        time.sleep(0.02)
    try:
        yield base_url(settings, port)
    finally:
        server.should_exit = True
        thread.join(timeout=settings.shutdown_drain_s + 30)
        if getattr(app.state, "security", None) is not None:
            app.state.security.close()  # the lifespan closed it already, unless the server never shut down
        if getattr(app.state, "documents", None) is not None:
            app.state.documents.close()
