"""Request bodies are JSON whatever their Content-Type, as in OpenAI's and Ollama's APIs.

`curl -d`, LiteLLM's `ollama_chat/` provider and many scripts send JSON as a form or with no type at all.
This ASGI middleware reads every body of a POST, PUT or PATCH once: JSON text is passed on labelled
`application/json`, so every route parses it; anything else is a 400 in the surface's error shape, before
any route runs. Text JSON cannot store (an unpaired UTF-16 surrogate such as `"\\ud800"`) is refused too, and
so is nesting deeper than `MAX_DEPTH` (each later parse and walk of the body would recurse that deep).
Routes whose bodies are forms or uploads (the console, the document upload) are named as exempt and pass
untouched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from garrison.api.errors import error_body
from garrison.errors import InvalidRequest

_WITH_BODY = ("POST", "PUT", "PATCH")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
# Arrays and objects inside one another: far more than any chat, tool schema or document request needs.
MAX_DEPTH = 100


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in a parsed JSON value (a scalar is 0), walked without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _unpaired_surrogate(value: Any) -> bool:
    """Whether any string in a parsed JSON value holds a lone surrogate (it cannot be encoded as UTF-8)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def json_problem(body: bytes) -> str | None:
    """Why a request body is not JSON garrison can use, or None when it is."""
    try:
        value = json.loads(body)
    except UnicodeDecodeError:
        return "the request body is not valid JSON: it is not UTF-8 text"
    except ValueError as exc:
        return f"the request body is not valid JSON ({exc})"
    except RecursionError:
        return f"the request body nests arrays and objects more than {MAX_DEPTH} deep"
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        return f"the request body nests arrays and objects more than {MAX_DEPTH} deep"
    if _SURROGATE_ESCAPE.search(body) and _unpaired_surrogate(value):
        return "the request body is not valid JSON text: it contains an unpaired UTF-16 surrogate (\\ud800-\\udfff)"
    return None


class JsonBodyMiddleware:
    """Label every non-empty POST/PUT/PATCH body `application/json` if it is JSON; answer 400 if it is not."""

    def __init__(
        self, app: ASGIApp, *, exempt_paths: Collection[str] = (), exempt_prefixes: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.exempt_paths = frozenset(exempt_paths)
        self.exempt_prefixes = tuple(p.rstrip("/") + "/" for p in exempt_prefixes)
        self.exempt_roots = frozenset(p.rstrip("/") for p in exempt_prefixes)

    def _exempt(self, path: str) -> bool:
        """Whether `path`'s bodies are not JSON (forms, uploads): they reach their route as sent."""
        return path in self.exempt_paths or path in self.exempt_roots or path.startswith(self.exempt_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _WITH_BODY or self._exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away before sending its body
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body.strip():
            problem = json_problem(body)
            if problem is not None:
                await _reject(scope, send, InvalidRequest(problem))
                return
            headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-type"]
            scope["headers"] = [*headers, (b"content-type", b"application/json")]
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _reject(scope: Scope, send: Send, exc: InvalidRequest) -> None:
    ctx = scope.get("state", {}).get("ctx")  # the request context: its audit record says what went wrong
    if ctx is not None:
        ctx.note(exc)
    payload = json.dumps(error_body(scope["path"], exc)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
