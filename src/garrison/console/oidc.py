"""OpenID Connect sign-in for the console: authorization code flow with PKCE, state and nonce.

The ID token is verified with joserfc: its signature against the issuer's JWKS (refetched once when a
key id is unknown, for key rotation), then `iss`, `aud`, `exp` and `nonce`. Claims map to a role,
clearance, scopes and models through `[[auth.oidc.rules]]`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from garrison.errors import ConfigError, Unauthenticated
from garrison.security.principal import ANY_COLLECTION, ANY_MODEL, CLEARANCES, SCOPES, Limits
from garrison.security.users import Grants
from garrison.settings import OidcRule, OidcSettings

_METADATA_TTL_S = 3600.0
_SIGNING_ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]


class ProviderError(Unauthenticated):
    """The OpenID provider could not be reached or answered something unusable."""

    code = "oidc_provider_error"


@dataclass(frozen=True, slots=True)
class Identity:
    """A person the provider vouched for: stable subject (issuer + sub), username and verified claims."""

    subject: str
    username: str
    display_name: str | None
    claims: dict[str, Any]


class OidcClient:
    """One relying party for one issuer; discovery and JWKS are cached in memory."""

    def __init__(self, settings: OidcSettings, client_secret: str | None = None) -> None:
        self.settings = settings
        self.label = settings.label
        self.redirect_url = settings.redirect_url
        secret = client_secret if client_secret is not None else os.environ.get(settings.client_secret_env)
        if not secret:
            raise ConfigError(
                f"[auth.oidc] needs the client secret in the environment variable {settings.client_secret_env}"
            )
        self._secret = secret
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._jwks: KeySet | None = None

    async def authorization_url(self, redirect_uri: str) -> tuple[str, dict[str, Any]]:
        """Where to send the browser, and the flow state (state, nonce, verifier) to keep until it returns."""
        meta = await self._discover()
        flow = {
            "state": secrets.token_urlsafe(24),
            "nonce": secrets.token_urlsafe(24),
            "verifier": secrets.token_urlsafe(48),
        }
        challenge = base64.urlsafe_b64encode(hashlib.sha256(flow["verifier"].encode()).digest()).rstrip(b"=")
        query = {
            "response_type": "code",
            "client_id": self.settings.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(dict.fromkeys(["openid", *self.settings.scopes])),
            "state": flow["state"],
            "nonce": flow["nonce"],
            "code_challenge": challenge.decode(),
            "code_challenge_method": "S256",
        }
        endpoint = meta["authorization_endpoint"]
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(query)}", flow

    async def finish(self, params: dict[str, str], flow: dict[str, Any], redirect_uri: str) -> Identity:
        """Redeem the authorization code and return the verified identity (Unauthenticated if anything is off)."""
        meta = await self._discover()
        if "iss" in params and params["iss"] != meta["issuer"]:  # RFC 9207: the response names its issuer
            raise Unauthenticated("the sign-in response came from another issuer")
        code = params.get("code")
        if not code:
            raise Unauthenticated("the provider sent no authorization code")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": str(flow["verifier"]),
        }
        methods = meta.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        auth: tuple[str, str] | None = (self.settings.client_id, self._secret)
        if "client_secret_basic" not in methods:
            form |= {"client_id": self.settings.client_id, "client_secret": self._secret}
            auth = None
        tokens = await self._request("POST", meta["token_endpoint"], data=form, auth=auth)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise Unauthenticated("the provider returned no ID token")
        claims = await self._verify(id_token, str(flow["nonce"]), meta)
        if meta.get("userinfo_endpoint") and isinstance(tokens.get("access_token"), str):
            info = await self._request(
                "GET", meta["userinfo_endpoint"], headers={"Authorization": f"Bearer {tokens['access_token']}"}
            )
            if info.get("sub") == claims["sub"]:  # userinfo of another subject is ignored (OIDC Core 5.3.2)
                claims = {**info, **claims}
        username = claims.get(self.settings.username_claim) or claims.get("email") or claims["sub"]
        name = claims.get("name")
        return Identity(
            subject=f"{meta['issuer']}|{claims['sub']}",
            username=str(username)[:64],
            display_name=str(name)[:200] if name else None,
            claims=claims,
        )

    def grants(self, claims: dict[str, Any]) -> Grants:
        """The role, clearance, scopes and models the rules give these claims (refused if none match and
        `require_rule` is set)."""
        cfg = self.settings
        matched = [rule for rule in cfg.rules if _matches(rule, claims)]
        if cfg.require_rule and not matched:
            raise Unauthenticated("your account is not allowed to use this console (no sign-in rule matches)")
        role = "admin" if cfg.default_role == "admin" or any(r.role == "admin" for r in matched) else "user"
        levels = [cfg.default_clearance, *(r.clearance for r in matched if r.clearance)]
        clearance = max(levels, key=CLEARANCES.index)
        wanted_scopes = {*cfg.default_scopes, *(s for r in matched for s in r.scopes)}
        models = list(dict.fromkeys([*cfg.default_models, *(m for r in matched for m in r.models)]))
        if ANY_MODEL in models:
            models = [ANY_MODEL]
        collections = list(dict.fromkeys([*cfg.default_collections, *(c for r in matched for c in r.collections)]))
        if ANY_COLLECTION in collections:
            collections = [ANY_COLLECTION]
        scopes = tuple(s for s in SCOPES if s in wanted_scopes)
        return Grants(role, scopes, tuple(models), clearance, Limits(), tuple(collections))

    async def _discover(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._metadata is None or now - self._metadata_at > _METADATA_TTL_S:
            issuer = self.settings.issuer.rstrip("/")
            meta = await self._request("GET", f"{issuer}/.well-known/openid-configuration")
            if meta.get("issuer", "").rstrip("/") != issuer:
                raise ProviderError(f"the provider's metadata names the issuer {meta.get('issuer')!r}, not {issuer!r}")
            for field in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(meta.get(field), str):
                    raise ProviderError(f"the provider's metadata lacks {field}")
            self._metadata, self._metadata_at, self._jwks = meta, now, None
        return self._metadata

    async def _keys(self, meta: dict[str, Any], refresh: bool = False) -> KeySet:
        if self._jwks is None or refresh:
            self._jwks = KeySet.import_key_set(await self._request("GET", meta["jwks_uri"]))  # type: ignore[arg-type]
        return self._jwks

    async def _verify(self, id_token: str, nonce: str, meta: dict[str, Any]) -> dict[str, Any]:
        algorithms = [a for a in meta.get("id_token_signing_alg_values_supported", _SIGNING_ALGS) if a != "none"]
        try:
            try:
                token = jwt.decode(id_token, await self._keys(meta), algorithms=algorithms)
            except JoseError:
                token = jwt.decode(id_token, await self._keys(meta, refresh=True), algorithms=algorithms)
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": meta["issuer"]},
                aud={"essential": True, "value": self.settings.client_id},
                exp={"essential": True},
                sub={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(token.claims)
        except (JoseError, ValueError) as exc:
            raise Unauthenticated(f"the ID token is not valid ({type(exc).__name__}: {exc})") from None
        claims = dict(token.claims)
        aud = claims.get("aud")
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != self.settings.client_id:
            raise Unauthenticated("the ID token was issued to another client (azp)")
        return claims

    async def _request(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(timeout=self.settings.timeout_s, follow_redirects=False) as http:
                response = await http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise ProviderError(f"the provider could not be reached ({type(exc).__name__})") from None
        if response.status_code != 200:
            detail = ""
            try:
                detail = str(response.json().get("error_description") or response.json().get("error") or "")
            except ValueError:
                pass
            raise ProviderError(f"the provider answered {response.status_code} {detail}".strip())
        try:
            body = response.json()
        except ValueError:
            raise ProviderError("the provider answered something that is not JSON") from None
        if not isinstance(body, dict):
            raise ProviderError("the provider answered JSON that is not an object")
        return body


def _matches(rule: OidcRule, claims: dict[str, Any]) -> bool:
    value = claims.get(rule.claim)
    if isinstance(value, list):
        return rule.value in [str(v) for v in value]
    return value is not None and str(value) == rule.value
