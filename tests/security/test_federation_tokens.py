"""Peer tokens between tiers: signed by the local gateway, refused when forged, expired, misaddressed or replayed."""

from __future__ import annotations

import base64
import json

import pytest

from garrison.errors import Unauthenticated
from garrison.security.federation import TokenSigner, TokenVerifier, TrustedPeer, lower_clearance
from garrison.security.principal import Principal


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _user(clearance: str = "confidential") -> Principal:
    return Principal("k1", "alice", "prod", frozenset({"chat"}), frozenset({"*"}), clearance=clearance)


def _pair(clock: Clock, max_clearance: str = "restricted") -> tuple[TokenSigner, TokenVerifier]:
    signer = TokenSigner.generate("laptop-7", clock)
    peer = TrustedPeer.from_pem("laptop-7", signer.public_pem(), max_clearance)
    return signer, TokenVerifier("central", [peer], clock)


def _code(verifier: TokenVerifier, token: str) -> str | None:
    with pytest.raises(Unauthenticated) as exc:
        verifier.verify(token)
    return exc.value.code


def test_a_valid_token_carries_the_user_and_the_local_request_id() -> None:
    clock = Clock()
    signer, verifier = _pair(clock)
    claims = verifier.verify(signer.mint(_user(), audience="central", request_id="req-local-1"))
    assert (claims.issuer, claims.key_id, claims.env, claims.clearance) == ("laptop-7", "k1", "prod", "confidential")
    assert claims.request_id == "req-local-1" and claims.scopes == ("chat",)


def test_the_lower_of_the_two_clearances_applies() -> None:
    clock = Clock()
    signer, verifier = _pair(clock, max_clearance="internal")
    assert verifier.verify(signer.mint(_user("restricted"), audience="central", request_id="r")).clearance == "internal"
    assert lower_clearance("public", "restricted") == "public"


def test_forged_expired_misaddressed_replayed_and_tampered_tokens_are_refused() -> None:
    clock = Clock()
    signer, verifier = _pair(clock)
    impostor = TokenSigner.generate("laptop-7", clock)  # same name, another key
    assert _code(verifier, impostor.mint(_user(), audience="central", request_id="r")) == "peer_token_forged"
    assert _code(verifier, TokenSigner.generate("stranger", clock).mint(
        _user(), audience="central", request_id="r")) == "peer_untrusted"
    assert _code(verifier, signer.mint(_user(), audience="other", request_id="r")) == "peer_token_audience"
    old = signer.mint(_user(), audience="central", request_id="r", ttl_s=10)
    clock.now += 11
    assert _code(verifier, old) == "peer_token_expired"
    assert _code(verifier, signer.mint(_user(), audience="central", request_id="r", ttl_s=3600)) == "peer_token_invalid"
    once = signer.mint(_user(), audience="central", request_id="r")
    verifier.verify(once)
    assert _code(verifier, once) == "peer_token_replayed"
    head, body, sig = signer.mint(_user("public"), audience="central", request_id="r").split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["clearance"] = "restricted"  # raise one's own clearance: the signature no longer matches
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert _code(verifier, f"{head}.{forged}.{sig}") == "peer_token_forged"
    assert _code(verifier, "not-a-token") == "peer_token_invalid"
