"""Tokens between garrison tiers: a local gateway signs who is asking, a central one checks before it answers.

A forwarded request carries a short-lived JWS (compact, EdDSA over Ed25519) signed by the local gateway:
the end user's key id (`sub`), environment, clearance and scopes, the local request id (`rid`, so the two
audit chains link), an `act` claim naming the local gateway, the central tier as audience, and an expiry
of seconds. The central tier trusts a peer by its public key, refuses a forged, expired, wrongly addressed
or replayed token, and applies the lower of the token's clearance and the peer's own ceiling.

Not yet wired: the `engine = "garrison"` upstream that attaches these tokens and the central-side stage
that verifies them (docs/scale.md, "Not built yet").
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from garrison.errors import Unauthenticated
from garrison.security.principal import CLEARANCES, Principal
from garrison.store.times import Clock

MAX_TTL_S = 60.0  # a central tier refuses tokens meant to live longer than this
_HEADER = {"alg": "EdDSA", "typ": "JWT"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def lower_clearance(a: str, b: str) -> str:
    """The lower of two clearances (public < internal < confidential < restricted)."""
    return min(a, b, key=CLEARANCES.index)


@dataclass(frozen=True, slots=True)
class PeerClaims:
    """What a verified token says about the request a peer forwarded."""

    issuer: str  # the local gateway
    key_id: str  # the end user's key there
    env: str
    clearance: str  # already the lower of the token's and the peer's ceiling
    scopes: tuple[str, ...]
    request_id: str  # the local request id, recorded with the central one
    token_id: str


class TokenSigner:
    """The local tier's signing key: mints one token per forwarded request."""

    def __init__(self, private_key: Ed25519PrivateKey, issuer: str, clock: Clock = time.time) -> None:
        self._key, self.issuer, self._clock = private_key, issuer, clock

    @classmethod
    def generate(cls, issuer: str, clock: Clock = time.time) -> TokenSigner:
        return cls(Ed25519PrivateKey.generate(), issuer, clock)

    @classmethod
    def from_pem(cls, path: Path, issuer: str, clock: Clock = time.time) -> TokenSigner:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key")
        return cls(key, issuer, clock)

    def public_pem(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def mint(self, principal: Principal, *, audience: str, request_id: str, ttl_s: float = 30.0) -> str:
        now = self._clock()
        claims = {
            "iss": self.issuer, "aud": audience, "sub": principal.key_id, "env": principal.env,
            "clearance": principal.clearance, "scopes": sorted(principal.scopes), "rid": request_id,
            "act": {"sub": self.issuer}, "iat": now, "exp": now + ttl_s, "jti": secrets.token_hex(12),
        }
        signing_input = ".".join(
            _b64(json.dumps(part, separators=(",", ":"), sort_keys=True).encode()) for part in (_HEADER, claims)
        )
        return f"{signing_input}.{_b64(self._key.sign(signing_input.encode()))}"


@dataclass(frozen=True, slots=True)
class TrustedPeer:
    """A local gateway the central tier accepts requests from, and the highest clearance it may pass on."""

    name: str
    public_key: Ed25519PublicKey
    max_clearance: str = "restricted"

    @classmethod
    def from_pem(cls, name: str, pem: bytes, max_clearance: str = "restricted") -> TrustedPeer:
        key = serialization.load_pem_public_key(pem)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"the key of peer '{name}' is not an Ed25519 public key")
        return cls(name, key, max_clearance)


class TokenVerifier:
    """The central tier's check of forwarded requests; thread-safe, with a bounded memory of used tokens."""

    def __init__(
        self, audience: str, peers: list[TrustedPeer], clock: Clock = time.time, *, seen_capacity: int = 100_000
    ) -> None:
        self.audience, self._clock = audience, clock
        self._peers = {p.name: p for p in peers}
        self._seen: OrderedDict[str, float] = OrderedDict()  # token id -> expiry, oldest first
        self._capacity = seen_capacity
        self._lock = threading.Lock()

    def verify(self, token: str) -> PeerClaims:
        """The claims of a valid token, or Unauthenticated saying what is wrong with it."""
        parts = token.split(".")
        if len(parts) != 3:
            raise Unauthenticated("malformed peer token", code="peer_token_invalid")
        try:
            header, claims = (json.loads(_unb64(p)) for p in parts[:2])
            signature = _unb64(parts[2])
        except ValueError:
            raise Unauthenticated("malformed peer token", code="peer_token_invalid") from None
        if not isinstance(header, dict) or header.get("alg") != "EdDSA" or not isinstance(claims, dict):
            raise Unauthenticated("peer token is not EdDSA-signed", code="peer_token_invalid")
        peer = self._peers.get(str(claims.get("iss")))
        if peer is None:
            raise Unauthenticated("peer token from an untrusted gateway", code="peer_untrusted")
        try:
            peer.public_key.verify(signature, f"{parts[0]}.{parts[1]}".encode())
        except InvalidSignature:
            raise Unauthenticated("peer token signature does not verify", code="peer_token_forged") from None
        return self._accept(peer, claims)

    def _accept(self, peer: TrustedPeer, claims: dict[str, Any]) -> PeerClaims:
        now = self._clock()
        try:
            exp, iat, jti = float(claims["exp"]), float(claims["iat"]), str(claims["jti"])
            act = claims["act"]["sub"]
        except (KeyError, TypeError, ValueError):
            raise Unauthenticated("peer token lacks exp, iat, jti or act", code="peer_token_invalid") from None
        if claims.get("aud") != self.audience:
            raise Unauthenticated("peer token is addressed to another gateway", code="peer_token_audience")
        if act != peer.name:
            raise Unauthenticated("peer token's act claim names another gateway", code="peer_token_invalid")
        if now >= exp:
            raise Unauthenticated("peer token expired", code="peer_token_expired")
        if exp - iat > MAX_TTL_S or iat > now + 5:
            raise Unauthenticated(f"peer token lives longer than {MAX_TTL_S:.0f}s", code="peer_token_invalid")
        clearance = str(claims.get("clearance"))
        if clearance not in CLEARANCES:
            raise Unauthenticated("peer token names an unknown clearance", code="peer_token_invalid")
        with self._lock:
            while self._seen and (next(iter(self._seen.values())) <= now or len(self._seen) >= self._capacity):
                self._seen.popitem(last=False)  # expired ones can no longer be replayed anyway
            if jti in self._seen:
                raise Unauthenticated("peer token was already used", code="peer_token_replayed")
            self._seen[jti] = exp
        return PeerClaims(
            issuer=peer.name, key_id=str(claims.get("sub")), env=str(claims.get("env")),
            clearance=lower_clearance(clearance, peer.max_clearance),
            scopes=tuple(str(s) for s in claims.get("scopes") or ()), request_id=str(claims.get("rid")),
            token_id=jti,
        )
