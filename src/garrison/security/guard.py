"""The guard every request passes before engine work: authenticate (401), authorize (403), admit (429)."""

from __future__ import annotations

import time

from garrison.errors import PermissionDenied, Unauthenticated
from garrison.security.federation import TokenVerifier, looks_like_token
from garrison.security.keys import KeyStore, parse_token
from garrison.security.principal import CLEARANCES, SCOPES, Principal
from garrison.security.quotas import Grant, Quotas
from garrison.store.times import Clock, to_iso

_KEY_SHAPE = "garrison keys look like 'gsk_<env>_<id>_<secret>'"


class Guard:
    """Checks keys against one server environment; sync, thread-safe and fast (one indexed read per call)."""

    def __init__(self, keys: KeyStore, quotas: Quotas, env: str, clock: Clock = time.time) -> None:
        self.keys = keys
        self.quotas = quotas
        self.env = env
        self.clock = clock
        self.peers: TokenVerifier | None = None  # [[federation.peers]]: bearer tokens of trusted gateways

    def authenticate(self, authorization_header: str | None) -> Principal:
        """Who is calling: the key in `Authorization: Bearer <key>`, or Unauthenticated saying why not."""
        if not authorization_header or not authorization_header.strip():
            raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'")
        scheme, _, token = authorization_header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated(f"malformed Authorization header: expected 'Bearer <key>'; {_KEY_SHAPE}")
        if looks_like_token(token):
            return self._peer(token)
        parsed = parse_token(token)
        if parsed is None:
            raise Unauthenticated(f"malformed API key: {_KEY_SHAPE}")
        match = self.keys.match(token, parsed.key_id)
        if match is None:
            hint = (
                ""
                if parsed.env == self.env
                else (f" (its prefix names the '{parsed.env}' environment; this server serves '{self.env}')")
            )
            raise Unauthenticated(f"unknown API key{hint}")
        record, now = match.record, self.clock()
        if record.revoked_at is not None:
            raise Unauthenticated(f"API key '{record.id}' was revoked at {to_iso(record.revoked_at)}")
        if record.expires_at is not None and now >= record.expires_at:
            raise Unauthenticated(f"API key '{record.id}' expired at {to_iso(record.expires_at)}")
        if match.secret_expires_at is not None and now >= match.secret_expires_at:
            raise Unauthenticated(
                f"this secret of API key '{record.id}' was rotated out at {to_iso(match.secret_expires_at)}; "
                "use the key's new secret"
            )
        if record.env != self.env:
            raise Unauthenticated(
                f"this key belongs to the '{record.env}' environment; this server serves '{self.env}'",
                code="wrong_environment",
            )
        return record.principal()

    def _peer(self, token: str) -> Principal:
        """A trusted gateway's forwarded request: its token verified (security/federation.py)."""
        if self.peers is None:
            raise Unauthenticated("this gateway accepts no peer tokens (no [[federation.peers]] configured)",
                                  code="peer_untrusted")
        claims = self.peers.verify(token)
        return self.peers.peers[claims.issuer].principal(claims, self.env)

    def authorize(
        self,
        principal: Principal,
        scope: str | None,
        model: str | None = None,
        *,
        clearance: str | None = None,
    ) -> None:
        """May this key use this route (`scope`; None: any authenticated key), model and data clearance?"""
        if scope is not None and scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}; routes use one of {SCOPES}")
        who = f"API key '{principal.name}' ({principal.key_id})"
        if scope is not None and not principal.has_scope(scope):
            granted = ", ".join(sorted(principal.scopes)) or "none"
            raise PermissionDenied(
                f"{who} lacks the '{scope}' scope (it has: {granted})", code="missing_scope"
            )
        if model is not None and not principal.allows_model(model):
            allowed = ", ".join(sorted(principal.models))
            raise PermissionDenied(
                f"{who} is not allowed the model '{model}' (allowed: {allowed})",
                param="model",
                code="model_not_allowed",
            )
        if clearance is not None:
            if clearance not in CLEARANCES:
                raise ValueError(f"unknown clearance {clearance!r}; use one of {CLEARANCES}")
            if not principal.cleared_for(clearance):
                raise PermissionDenied(
                    f"{who} has clearance '{principal.clearance}'; this needs '{clearance}'", code="clearance"
                )

    def admit(
        self, principal: Principal, prompt_tokens: int = 0, completion_tokens: int = 0, *, open_ended: bool = False
    ) -> Grant:
        """Apply the key's rpm, tpm and daily budget (RateLimited with Retry-After when over); see Quotas."""
        return self.quotas.admit(principal, prompt_tokens, completion_tokens, open_ended=open_ended)

    def record_usage(
        self,
        principal: Principal,
        model: str | None,
        prompt_tokens: int,
        completion_tokens: int,
        *,
        grant: Grant | None = None,
    ) -> None:
        """Charge actual tokens to the key's buckets (settling what `admit` granted) and its usage rows."""
        held = grant if grant is not None else Grant(principal.key_id, 0)
        self.quotas.settle(principal, held, model, prompt_tokens, completion_tokens)
