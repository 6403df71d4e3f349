"""Peer tokens between tiers: signed by the local gateway, refused when forged, expired, misaddressed or replayed."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from garrison.errors import Overloaded, Unauthenticated
from garrison.security.federation import TokenSigner, TokenVerifier, TrustedPeer, lower_clearance, public_key_text
from garrison.security.principal import Principal


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_full_replay_memory_refuses_new_tokens_until_one_expires_and_never_forgets_a_live_one() -> None:
    clock = Clock()
    signer = TokenSigner.generate("laptop-7", clock)
    verifier = TokenVerifier("central", [TrustedPeer.from_pem("laptop-7", signer.public_pem(), "restricted")],
                             clock, seen_capacity=2)
    first = signer.mint(_user(), audience="central", request_id="r1", ttl_s=10)
    clock.now += 1
    second = signer.mint(_user(), audience="central", request_id="r2", ttl_s=30)
    verifier.verify(first)
    verifier.verify(second)
    third = signer.mint(_user(), audience="central", request_id="r3", ttl_s=30)
    with pytest.raises(Overloaded) as full:
        verifier.verify(third)
    assert full.value.status == 503 and full.value.code == "replay_memory_full"
    assert full.value.retry_after == pytest.approx(9.0)  # until the first id expires
    assert _code(verifier, first) == "peer_token_replayed"  # nothing live was forgotten
    assert _code(verifier, second) == "peer_token_replayed"
    clock.now += 9.5  # the first id expired: room for one
    assert verifier.verify(third).request_id == "r3"
    assert _code(verifier, second) == "peer_token_replayed"


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


def _signed(signer: TokenSigner, **claims: object) -> str:
    """A token signed by `signer` with some claims replaced (as only a trusted peer's own bug could make)."""
    head, body, _ = signer.mint(_user(), audience="central", request_id="r").split(".")
    values = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    values.update(claims)
    raw = json.dumps(values).encode()  # NaN and huge numbers are valid Python JSON
    body = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    sig = base64.urlsafe_b64encode(signer._key.sign(f"{head}.{body}".encode())).rstrip(b"=").decode()
    return f"{head}.{body}.{sig}"


@pytest.mark.parametrize("claims", [
    {"exp": float("nan")}, {"exp": float("inf")}, {"exp": 10**400}, {"jti": ""}, {"jti": ["x"]},
    {"rid": "a b"}, {"sub": "x" * 200}, {"scopes": "chat"}, {"scopes": [1]}, {"act": "laptop-7"},
    {"clearance": "top-secret"}, {"env": None},
])
def test_signed_but_malformed_claims_are_refused_never_raised(claims: dict[str, object]) -> None:
    clock = Clock()
    signer, verifier = _pair(clock)
    assert _code(verifier, _signed(signer, **claims)) == "peer_token_invalid"


@pytest.mark.parametrize("garbage", ["a.b.c", "..", "!!.!!.!!", "eyJ9.eyJ9.", "e30.W10.", "e30.e30.AAAA"])
def test_garbage_shaped_like_a_token_is_refused(garbage: str) -> None:
    _, verifier = _pair(Clock())
    assert _code(verifier, garbage) in ("peer_token_invalid", "peer_untrusted")


def test_a_peer_principal_is_the_peers_grants_narrowed_by_the_token() -> None:
    from garrison.security.federation import load_verifier
    from garrison.settings import Settings

    clock = Clock()
    signer = TokenSigner.generate("laptop-7", clock)
    settings = Settings(federation={"name": "central", "peers": [{
        "name": "laptop-7", "public_key": public_key_text(signer), "max_clearance": "internal",
        "scopes": ["chat", "documents"], "models": ["kb"], "collections": ["handbook"], "rpm": 60,
    }]})
    verifier = load_verifier(settings, clock)
    assert verifier is not None
    user = Principal("k1", "alice", "prod", frozenset({"chat", "embeddings"}), frozenset({"*"}),
                     clearance="restricted")
    claims = verifier.verify(signer.mint(user, audience="central", request_id="req-9"))
    who = verifier.peers["laptop-7"].principal(claims, "dev")
    assert (who.key_id, who.name, who.env, who.clearance) == ("peer:laptop-7", "k1@laptop-7", "dev", "internal")
    assert who.scopes == {"chat"} and who.models == {"kb"} and who.collections == {"handbook"}
    assert who.limits.rpm == 60 and who.delegation == claims
    assert claims.audit() == {"peer": "laptop-7", "peer_key_id": "k1", "peer_env": "prod",
                              "peer_request_id": "req-9", "token_id": claims.token_id}


def test_a_peer_key_is_read_as_base64_pem_text_or_pem_file(tmp_path: Path) -> None:
    from garrison.errors import ConfigError
    from garrison.security.federation import load_verifier
    from garrison.settings import Settings

    signer = TokenSigner.generate("p")
    (tmp_path / "p.pub").write_bytes(signer.public_pem())
    for form in (public_key_text(signer), signer.public_pem().decode(), str(tmp_path / "p.pub")):
        settings = Settings(federation={"name": "c", "peers": [{"name": "p", "public_key": form}]})
        verifier = load_verifier(settings)
        assert verifier is not None
        assert verifier.verify(signer.mint(_user(), audience="c", request_id="r")).issuer == "p"
    for bad in ("not a key", str(tmp_path / "missing.pem"), "AAAA"):
        with pytest.raises(ConfigError, match="peer 'p'"):
            load_verifier(Settings(federation={"name": "c", "peers": [{"name": "p", "public_key": bad}]}))
    with pytest.raises(ConfigError, match="admin"):
        load_verifier(Settings(federation={"name": "c", "peers": [
            {"name": "p", "public_key": public_key_text(signer), "scopes": ["admin"]}]}))


def test_the_guard_turns_a_peer_token_into_a_peer_principal_and_refuses_it_without_peers(tmp_path: Path) -> None:
    from garrison.security import connect
    from garrison.settings import Settings

    signer = TokenSigner.generate("laptop-7")
    token = signer.mint(_user(), audience="central", request_id="r1")
    bare = connect(Settings(home=tmp_path / "bare"))
    try:
        with pytest.raises(Unauthenticated) as refused:
            bare.guard.authenticate(f"Bearer {token}")
        assert refused.value.code == "peer_untrusted"
    finally:
        bare.close()
    central = connect(Settings(home=tmp_path / "central", federation={
        "name": "central", "peers": [{"name": "laptop-7", "public_key": public_key_text(signer),
                                      "max_clearance": "confidential"}]}))
    try:
        who = central.guard.authenticate(f"Bearer {token}")
        assert who.key_id == "peer:laptop-7" and who.clearance == "confidential" and who.delegation is not None
        with pytest.raises(Unauthenticated) as replayed:
            central.guard.authenticate(f"Bearer {token}")
        assert replayed.value.code == "peer_token_replayed"
    finally:
        central.close()
