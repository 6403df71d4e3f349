"""Tokens between garrison tiers: a local gateway signs who is asking, a central one checks before it answers.

A request the local tier forwards (`[[models]] engine = "garrison"`, engines/upstream/garrison.py) carries
`Authorization: Bearer <token>`: a compact JWS (EdDSA over Ed25519) signed by the local gateway with the end
user's key id (`sub`), environment, clearance and scopes, the local request id (`rid`, so the two audit
chains link), an `act` claim naming the local gateway, the central tier as audience (`aud`), an expiry of
seconds and a unique `jti`. The central tier (`[[federation.peers]]`) trusts a peer by its public key; the
guard (security/guard.py) turns such a bearer into a peer `Principal` or refuses it (401) when forged,
expired, wrongly addressed, meant to live too long, or replayed (a used `jti` is remembered in the process and,
on a shared store, in the store, so several central gateways refuse a token any one of them took). The
principal's clearance is the lower of the token's and the peer's `max_clearance`; its scopes, models and
collections are what both allow; its audit records carry the peer, the end user and the local request id.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from garrison.errors import ConfigError, Overloaded, Unauthenticated
from garrison.security.principal import CLEARANCES, SCOPES, Limits, Principal
from garrison.store.times import Clock

if TYPE_CHECKING:
    from garrison.settings import FederationPeer, Settings
    from garrison.store import Store

log = logging.getLogger("garrison.security")
MAX_TTL_S = 60.0  # a central tier refuses tokens meant to live longer than this
_HEADER = {"alg": "EdDSA", "typ": "JWT"}
_ID = re.compile(r"^[A-Za-z0-9._:@/-]{1,128}$")  # ids a token may carry into an audit record
PEER_KEY_PREFIX = "peer:"  # the key id of a peer principal: "peer:<peer name>" (quotas are per peer)


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

    def audit(self) -> dict[str, str]:
        """What the central audit records carry about the forwarded request (`details.federation`)."""
        return {"peer": self.issuer, "peer_key_id": self.key_id, "peer_env": self.env,
                "peer_request_id": self.request_id, "token_id": self.token_id}


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

    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

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
    scopes: frozenset[str] = frozenset(SCOPES) - {"admin"}
    models: frozenset[str] = frozenset({"*"})
    collections: frozenset[str] = frozenset({"*"})
    limits: Limits = Limits()

    @classmethod
    def from_pem(cls, name: str, pem: bytes, max_clearance: str = "restricted") -> TrustedPeer:
        key = serialization.load_pem_public_key(pem)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"the key of peer '{name}' is not an Ed25519 public key")
        return cls(name, key, max_clearance)

    @classmethod
    def from_settings(cls, peer: FederationPeer) -> TrustedPeer:
        """A `[[federation.peers]]` entry; ConfigError naming the peer when its key cannot be read."""
        unknown = sorted(set(peer.scopes) - set(SCOPES))
        if unknown or "admin" in peer.scopes:
            raise ConfigError(f"federation peer '{peer.name}': scope '{(unknown or ['admin'])[0]}' cannot be "
                              "granted to a peer")
        return cls(
            peer.name, _public_key(peer.name, peer.public_key), peer.max_clearance, frozenset(peer.scopes),
            frozenset(peer.models), frozenset(peer.collections),
            Limits(rpm=peer.rpm, tpm=peer.tpm, daily_tokens=peer.daily_tokens),
        )

    def principal(self, claims: PeerClaims, env: str) -> Principal:
        """Who a verified token makes the caller here: this peer's grants narrowed by the token's claims."""
        return Principal(
            key_id=f"{PEER_KEY_PREFIX}{self.name}", name=f"{claims.key_id}@{self.name}", env=env,
            scopes=frozenset(claims.scopes) & self.scopes, models=self.models, clearance=claims.clearance,
            limits=self.limits, collections=self.collections, delegation=claims,
        )


def _public_key(name: str, value: str) -> Ed25519PublicKey:
    """A peer's key from PEM text, a PEM file path, or base64 of the raw 32-byte key."""
    text = value.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        elif Path(text).expanduser().is_file():
            key = serialization.load_pem_public_key(Path(text).expanduser().read_bytes())
        else:
            return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (OSError, ValueError) as exc:  # binascii.Error is a ValueError
        raise ConfigError(f"federation peer '{name}': its public_key is no PEM, PEM file or base64 raw Ed25519 "
                          f"key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"federation peer '{name}': its public_key is not an Ed25519 key")
    return key


def key_path(settings: Settings) -> Path:
    """Where this gateway's signing key lives (default GARRISON_HOME/federation.key)."""
    return settings.federation.key_file or settings.home / "federation.key"


def load_signer(settings: Settings, clock: Clock = time.time) -> TokenSigner:
    """This gateway's signer: its key file, created (Ed25519, PEM, mode 0600) when missing."""
    from garrison.security.keys import write_private_file

    name = settings.federation.name
    if name is None:
        raise ConfigError("a model with engine = \"garrison\" needs [federation] name (this gateway's name, "
                          "which the central tier lists in [[federation.peers]])")
    path = key_path(settings)
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        write_private_file(path, pem.decode())
    try:
        return TokenSigner.from_pem(path, name, clock)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"federation key {path} cannot be read: {exc}") from None


def load_verifier(settings: Settings, clock: Clock = time.time, store: Store | None = None) -> TokenVerifier | None:
    """The check of peer tokens when `[[federation.peers]]` lists any (None otherwise); with a shared `store`
    the tokens it accepts are remembered there too, against a replay to another gateway."""
    federation = settings.federation
    if not federation.peers:
        return None
    if federation.name is None:
        raise ConfigError("[[federation.peers]] needs [federation] name: the audience peers address tokens to")
    peers = [TrustedPeer.from_settings(p) for p in federation.peers]
    shared = StoreSeenTokens(store, clock) if store is not None else None
    return TokenVerifier(federation.name, peers, clock, seen_capacity=federation.replay_capacity, shared=shared)


class StoreSeenTokens:
    """Used token ids in the shared store: the first gateway to insert an id takes the token, any other (and any
    later replay) finds it there. While the store is unreachable only each process's own memory checks (the
    degraded mode of docs/scale.md); expired ids are deleted every `prune_every` insertions."""

    def __init__(self, store: Store, clock: Clock = time.time, *, prune_every: int = 1000) -> None:
        self._store, self._clock, self._prune_every = store, clock, prune_every
        self._inserted = 0
        self._degraded = False  # said once per outage
        self._lock = threading.Lock()

    def first_use(self, token_id: str, expires_at: float) -> bool:
        """Record `token_id`; False when it was already recorded (a replay)."""
        store = self._store
        try:
            added = store.execute(
                "INSERT INTO federation_tokens (id, expires_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
                (token_id, expires_at),
            )
            with self._lock:
                self._inserted += 1
                prune = self._inserted % self._prune_every == 0
            if prune:
                store.execute("DELETE FROM federation_tokens WHERE expires_at <= ?", (self._clock(),))
        except store.errors as exc:
            if not store.is_outage(exc):
                raise
            if not self._degraded:
                self._degraded = True
                log.warning("peer tokens are checked against each process's memory only while the store is "
                            "unreachable")
            return True
        self._degraded = False
        return added == 1


def looks_like_token(bearer: str) -> bool:
    """Whether a bearer credential is shaped like a JWS (three base64url parts), not an API key."""
    return bearer.count(".") == 2 and not bearer.startswith("gsk_")


def public_key_text(signer: TokenSigner) -> str:
    """The base64 of the raw public key: one line to paste into a peer's `public_key`."""
    raw = signer.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


class TokenVerifier:
    """The central tier's check of forwarded requests; thread-safe, with a bounded memory of used tokens."""

    def __init__(
        self, audience: str, peers: list[TrustedPeer], clock: Clock = time.time, *, seen_capacity: int = 100_000,
        shared: StoreSeenTokens | None = None,
    ) -> None:
        self.audience, self._clock, self._shared = audience, clock, shared
        self.peers = {p.name: p for p in peers}
        self._seen: OrderedDict[str, float] = OrderedDict()  # token id -> expiry, oldest first
        self._capacity = seen_capacity
        self._lock = threading.Lock()

    def _make_room(self, now: float) -> None:
        """Forget expired token ids (they can no longer be replayed); never one that could still be.

        Full of live ids (more than `replay_capacity` peer tokens within their lifetime of at most 60 s), the
        token is refused with 503 and Retry-After rather than an unexpired id forgotten, which would let
        that token be replayed.
        """
        while self._seen and next(iter(self._seen.values())) <= now:
            self._seen.popitem(last=False)
        if len(self._seen) < self._capacity:
            return
        for key in [key for key, exp in self._seen.items() if exp <= now]:  # ids live for different times
            del self._seen[key]
        if len(self._seen) >= self._capacity:
            retry = max(1.0, min(self._seen.values()) - now)
            raise Overloaded(f"this gateway remembers {self._capacity} unexpired peer token ids against replay "
                             "and takes no more until one expires; raise federation.replay_capacity",
                             retry_after=retry, code="replay_memory_full")

    def verify(self, token: str) -> PeerClaims:
        """The claims of a valid token, or Unauthenticated saying what is wrong with it."""
        parts = token.split(".")
        if len(parts) != 3:
            raise Unauthenticated("malformed peer token", code="peer_token_invalid")
        try:
            header, claims = (json.loads(_unb64(p)) for p in parts[:2])
            signature = _unb64(parts[2])
        except (ValueError, RecursionError):  # binascii.Error and UnicodeDecodeError are ValueErrors
            raise Unauthenticated("malformed peer token", code="peer_token_invalid") from None
        if not isinstance(header, dict) or header.get("alg") != "EdDSA" or not isinstance(claims, dict):
            raise Unauthenticated("peer token is not EdDSA-signed", code="peer_token_invalid")
        peer = self.peers.get(str(claims.get("iss")))
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
            exp, iat, jti = float(claims["exp"]), float(claims["iat"]), claims["jti"]
            act = claims["act"]["sub"]
        except (KeyError, TypeError, ValueError, OverflowError):
            raise Unauthenticated("peer token lacks exp, iat, jti or act", code="peer_token_invalid") from None
        if not (math.isfinite(exp) and math.isfinite(iat)):
            raise Unauthenticated("peer token times are not finite", code="peer_token_invalid")
        ids = (jti, claims.get("sub"), claims.get("rid"), claims.get("env"))
        if not all(isinstance(v, str) and _ID.match(v) for v in ids):
            raise Unauthenticated("peer token's jti, sub, rid or env is missing or malformed",
                                  code="peer_token_invalid")
        scopes = claims.get("scopes")
        if not isinstance(scopes, list) or not all(isinstance(x, str) for x in scopes):
            raise Unauthenticated("peer token's scopes are not a list of names", code="peer_token_invalid")
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
            seen = f"{peer.name}:{jti}"
            if seen in self._seen:
                raise Unauthenticated("peer token was already used", code="peer_token_replayed")
            self._make_room(now)
            self._seen[seen] = exp
        if self._shared is not None and not self._shared.first_use(seen, exp):  # taken by another gateway
            raise Unauthenticated("peer token was already used", code="peer_token_replayed")
        return PeerClaims(
            issuer=peer.name, key_id=str(claims.get("sub")), env=str(claims.get("env")),
            clearance=lower_clearance(clearance, peer.max_clearance),
            scopes=tuple(scopes), request_id=str(claims.get("rid")),
            token_id=jti,
        )
