"""ID token checks of the console's OpenID client: signature against the JWKS, iss, aud, exp, nonce.

The provider's two documents (discovery, JWKS) are served from memory here; the whole flow against a
real provider is in test_console_browser.py.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from garrison.console.oidc import OidcClient
from garrison.errors import Unauthenticated
from garrison.settings import OidcSettings

ISSUER = "http://idp.test"
KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"})
OTHER = RSAKey.generate_key(2048, parameters={"kid": "k1"})  # same key id, another key: a forgery


def _client(monkeypatch: pytest.MonkeyPatch) -> OidcClient:
    client = OidcClient(OidcSettings(issuer=ISSUER, client_id="garrison"), client_secret="s")
    documents = {
        f"{ISSUER}/.well-known/openid-configuration": {
            "issuer": ISSUER, "authorization_endpoint": f"{ISSUER}/auth", "token_endpoint": f"{ISSUER}/token",
            "jwks_uri": f"{ISSUER}/jwks", "id_token_signing_alg_values_supported": ["RS256"],
        },
        f"{ISSUER}/jwks": {"keys": [{**KEY.as_dict(private=False), "alg": "RS256", "use": "sig"}]},
    }

    async def serve(method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        return documents[url]

    monkeypatch.setattr(client, "_request", serve)
    return client


def _token(key: RSAKey = KEY, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": "garrison", "sub": "u1", "exp": now + 300, "iat": now, "nonce": "n1", **claims}
    return jwt.encode({"alg": "RS256", "kid": "k1"}, {k: v for k, v in body.items() if v is not None}, key)


async def test_a_good_token_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    client = _client(monkeypatch)
    claims = await client._verify(_token(), "n1", await client._discover())
    assert claims["sub"] == "u1"


@pytest.mark.parametrize(
    ("token", "why"),
    [
        (lambda: _token(OTHER), "signature"),
        (lambda: _token(iss="http://evil.test"), "iss"),
        (lambda: _token(aud="someone-else"), "aud"),
        (lambda: _token(exp=int(time.time()) - 60), "exp"),
        (lambda: _token(nonce="replayed"), "nonce"),
        (lambda: _token(nonce=None), "nonce"),
        (lambda: _token(aud=["garrison", "other"], azp="other"), "azp"),
    ],
)
async def test_a_bad_token_is_refused(monkeypatch: pytest.MonkeyPatch, token: Any, why: str) -> None:
    client = _client(monkeypatch)
    with pytest.raises(Unauthenticated):
        await client._verify(token(), "n1", await client._discover())


async def test_authorization_url_carries_pkce_state_and_nonce(monkeypatch: pytest.MonkeyPatch) -> None:
    client = _client(monkeypatch)
    url, flow = await client.authorization_url("http://localhost/console/oidc/callback")
    assert url.startswith(f"{ISSUER}/auth?") and "code_challenge_method=S256" in url
    assert f"state={flow['state']}" in url and f"nonce={flow['nonce']}" in url and flow["verifier"] not in url


def test_rules_grant_collections_and_the_defaults_can_grant_none() -> None:
    from garrison.settings import OidcRule

    rules = [OidcRule(claim="groups", value="hr", collections=["hr"], clearance="confidential"),
             OidcRule(claim="groups", value="eng", collections=["eng", "hr"])]
    closed = OidcClient(OidcSettings(issuer=ISSUER, client_id="garrison", default_collections=[], rules=rules),
                        client_secret="s")
    assert closed.grants({"groups": ["hr", "eng"]}).collections == ("hr", "eng")
    assert closed.grants({"groups": ["sales"]}).collections == ()
    assert closed.grants({"groups": ["hr"]}).clearance == "confidential"
    open_default = OidcClient(OidcSettings(issuer=ISSUER, client_id="garrison", rules=rules), client_secret="s")
    assert open_default.grants({"groups": ["hr"]}).collections == ("*",)
