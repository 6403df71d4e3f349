"""The local tier's side, no model: what an `engine = "garrison"` upstream sends, and what it never sends.

The central tier here is a bare listening socket: it proves that a request whose data is labelled above the
model's trust (the caller's X-Garrison-Data-Label) opens no connection at all, chat or embeddings (egress is
checked before any byte leaves), and it captures what an allowed request sends, whose bearer token must
verify as the end user's, addressed to the central tier, with the request's data label beside it.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from garrison.api.server import background_server, build
from garrison.security.federation import TokenSigner, TokenVerifier, TrustedPeer, key_path
from garrison.settings import Settings


@dataclass
class Local:
    url: str
    key: str
    key_id: str
    listener: socket.socket
    settings: Settings
    app: Any


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Local]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    settings = Settings(
        home=tmp_path / "home", host="127.0.0.1", port=0, default_model=False, engine={"embeddings": False},
        federation={"name": "ws-1"},
        models=[{"id": "hq-internal", "engine": "garrison", "upstreams": [f"http://127.0.0.1:{port}/v1"],
                 "upstream_model": "central-chat", "audience": "hq", "trust": "internal", "retries": 0,
                 "health": {"interval": 0}, "timeouts": {"first_token": 30}},
                {"id": "hq-embed", "engine": "garrison", "kind": "embed", "upstreams": [f"http://127.0.0.1:{port}/v1"],
                 "audience": "hq", "trust": "internal", "retries": 0, "health": {"interval": 0}}],
    )
    settings.ensure_home()
    app = build(settings)
    issued = app.state.security.keys.create(name="dana", env="dev", scopes=["chat", "embeddings"],
                                            models=["hq-internal", "hq-embed"], clearance="restricted")
    try:
        with background_server(settings, app) as url:
            yield Local(url, issued.token, issued.record.id, listener, settings, app)
    finally:
        listener.close()


def _send(local: Local, label: str, path: str, body: dict[str, Any]) -> httpx.Response:
    """A request whose caller declares what its data is (X-Garrison-Data-Label)."""
    return httpx.post(f"{local.url}{path}", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {local.key}", "X-Garrison-Data-Label": label})


def _chat(local: Local, label: str, text: str) -> httpx.Response:
    body = {"model": "hq-internal", "messages": [{"role": "user", "content": text}], "max_tokens": 4}
    return _send(local, label, "/v1/chat/completions", body)


def _accept_one(listener: socket.socket, seen: list[bytes]) -> None:
    """Take one connection, keep its request head, and close it (the engine then reports the upstream down)."""
    conn, _ = listener.accept()
    with conn:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        seen.append(data)


def _headers(head: bytes) -> dict[str, str]:
    """The request head's headers (lower-case names)."""
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {k.lower(): v for k, v in (line.split(": ", 1) for line in lines if ": " in line)}


def _verify(local: Local, token: str) -> Any:
    signer = TokenSigner.from_pem(key_path(local.settings), "ws-1")
    return TokenVerifier("hq", [TrustedPeer.from_pem("ws-1", signer.public_pem(), "confidential")]).verify(token)


def test_data_above_the_models_trust_never_leaves_and_allowed_requests_carry_a_verifiable_token(
    local: Local,
) -> None:
    refused = _chat(local, "confidential", "the merger terms are 41 per share")
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "egress_denied"
    vectors = _send(local, "restricted", "/v1/embeddings", {"model": "hq-embed", "input": ["merger terms"]})
    assert vectors.status_code == 403 and vectors.json()["error"]["code"] == "egress_denied", vectors.text
    local.listener.setblocking(False)  # a connection made before the 403 would be waiting here now
    with pytest.raises(BlockingIOError):
        local.listener.accept()
    local.listener.setblocking(True)

    seen: list[bytes] = []
    taker = threading.Thread(target=_accept_one, args=(local.listener, seen))
    taker.start()
    allowed = _chat(local, "internal", "when is the offsite?")
    taker.join(timeout=30)
    assert allowed.status_code == 502, allowed.text  # the stand-in closed without answering
    assert seen[0].startswith(b"POST /v1/chat/completions ")
    lower = _headers(seen[0])
    local_id = allowed.headers["x-request-id"]
    assert lower["x-request-id"] == local_id
    assert lower["x-garrison-data-label"] == "internal"  # the central tier checks the label again
    claims = _verify(local, lower["authorization"].removeprefix("Bearer "))
    assert (claims.issuer, claims.key_id, claims.env, claims.request_id) == ("ws-1", local.key_id, "dev", local_id)
    assert claims.clearance == "confidential"  # the user's restricted, capped at the peer's ceiling there
    assert set(claims.scopes) == {"chat", "embeddings"}

    security = local.app.state.security
    records = [r for r in security.audit.query(limit=None) if r["key_id"] == local.key_id]
    denied = [json.loads(r["details"])["egress"] for r in records if r["error_code"] == "egress_denied"]
    assert [(d["label"], d["trust"], d["allowed"]) for d in denied] == [
        ("confidential", "internal", False), ("restricted", "internal", False)]


def test_the_signing_key_is_created_private_and_kept(local: Local) -> None:
    path = key_path(local.settings)
    assert path.stat().st_mode & 0o777 == 0o600
    first = TokenSigner.from_pem(path, "ws-1").public_pem()
    build(local.settings).state.security.close()  # a second start reads the same key
    assert TokenSigner.from_pem(path, "ws-1").public_pem() == first


def test_embeddings_forwarded_to_a_central_tier_carry_the_users_token(local: Local) -> None:
    seen: list[bytes] = []
    taker = threading.Thread(target=_accept_one, args=(local.listener, seen))
    taker.start()
    answer = httpx.post(f"{local.url}/v1/embeddings", json={"model": "hq-embed", "input": ["a"]},
                        headers={"Authorization": f"Bearer {local.key}"}, timeout=60)
    taker.join(timeout=30)
    assert answer.status_code == 502, answer.text
    assert seen[0].startswith(b"POST /v1/embeddings ")
    claims = _verify(local, _headers(seen[0])["authorization"].removeprefix("Bearer "))
    assert (claims.key_id, claims.request_id) == (local.key_id, answer.headers["x-request-id"])
    assert set(claims.scopes) == {"chat", "embeddings"}
