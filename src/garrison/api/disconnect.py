"""Client gone means work stops: cancel a request's handler when its client disconnects before the response.

Starlette notices a disconnect only while it streams a response. A request still queued for a slot, in
prefill, or generating a whole (non-streamed) completion would run to the end for nobody. This pure ASGI
middleware watches the connection once the request body has been read; a disconnect before the response
starts cancels the handler (the engine frees the sequence's slot at its next step), and a disconnect
during a stream reaches the app as the usual `http.disconnect` message.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CLIENT_CLOSED = 499  # nginx's status for "client closed the request", recorded in the audit log


class CancelOnDisconnect:
    """Runs each HTTP request's app in a task that is cancelled if the client leaves before a response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        gone = False
        watcher: asyncio.Task[Message] | None = None

        async def watch() -> Message:
            nonlocal gone
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    if not started:
                        gone = True
                        handler.cancel()
                    return message

        async def app_receive() -> Message:
            nonlocal watcher
            if watcher is not None:
                return await asyncio.shield(watcher)
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                watcher = asyncio.ensure_future(watch())
            elif message["type"] == "http.disconnect" and not started:
                handler.cancel()
            return message

        async def app_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, app_receive, app_send))
        try:
            await handler
        except asyncio.CancelledError:
            if not gone or _cancelling():
                raise
            ctx = scope.get("state", {}).get("ctx")
            if ctx is not None:  # the audit record says why nothing was answered
                ctx.status = CLIENT_CLOSED
                ctx.reason = "the client disconnected before the response"
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watcher


def _cancelling() -> bool:
    """Whether this task itself is being cancelled (server shutdown), not just the handler."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
