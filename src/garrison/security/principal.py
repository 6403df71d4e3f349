"""Who is calling: the verified identity, permissions and limits of one API key, as every check sees it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from garrison.security.federation import PeerClaims

ENVIRONMENTS: tuple[str, ...] = ("dev", "staging", "prod")
SCOPES: tuple[str, ...] = (
    "chat", "completions", "embeddings", "metrics", "documents", "documents:write", "admin"
)
DEFAULT_SCOPES: tuple[str, ...] = ("chat", "completions", "embeddings")
CLEARANCES: tuple[str, ...] = ("public", "internal", "confidential", "restricted")
# The header in which a caller, or a local tier forwarding to a central one, declares the classification of
# the data it sends (one of CLEARANCES); on every surface.
DATA_LABEL_HEADER = "x-garrison-data-label"
ANY_MODEL = "*"
ANY_COLLECTION = "*"


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-key quotas; None means unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    daily_tokens: int | None = None

    def to_dict(self) -> dict[str, int | None]:
        return {"rpm": self.rpm, "tpm": self.tpm, "daily_tokens": self.daily_tokens}


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated API key: what it may do (scopes, models, clearance) and how much (limits)."""

    key_id: str
    name: str
    env: str
    scopes: frozenset[str]
    models: frozenset[str]
    clearance: str = "public"
    limits: Limits = field(default_factory=Limits)
    collections: frozenset[str] = frozenset({ANY_COLLECTION})
    policy: str | None = None  # guardrail policy name; None: the environment's default
    # A request a trusted peer gateway forwarded (security/federation.py): who asked there, its request id.
    delegation: PeerClaims | None = None

    @classmethod
    def anonymous(cls, env: str = "dev") -> Principal:
        """The caller when auth is disabled: everything allowed, no key, no limits."""
        return cls(key_id="", name="anonymous", env=env, scopes=frozenset(SCOPES),
                   models=frozenset({ANY_MODEL}), clearance=CLEARANCES[-1])

    @property
    def is_anonymous(self) -> bool:
        return not self.key_id

    def has_scope(self, scope: str) -> bool:
        """Whether the key holds `scope`; `admin` also grants metrics and both documents scopes (write grants read)."""
        if scope in self.scopes:
            return True
        if scope in ("metrics", "documents:write"):
            return "admin" in self.scopes
        return scope == "documents" and ("documents:write" in self.scopes or "admin" in self.scopes)

    def allows_model(self, model: str) -> bool:
        return ANY_MODEL in self.models or model in self.models

    def allows_collection(self, collection: str) -> bool:
        """Whether this key may read documents of `collection` (up to its clearance)."""
        return ANY_COLLECTION in self.collections or collection in self.collections

    @property
    def clearance_rank(self) -> int:
        """The clearance as a rank (0 = public ... 3 = restricted), the form stored beside every chunk."""
        return CLEARANCES.index(self.clearance)

    def cleared_for(self, level: str) -> bool:
        """Whether this key's clearance reaches `level` (public < internal < confidential < restricted)."""
        return CLEARANCES.index(self.clearance) >= CLEARANCES.index(level)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "name": self.name,
            "env": self.env,
            "scopes": sorted(self.scopes),
            "models": sorted(self.models),
            "clearance": self.clearance,
            "collections": sorted(self.collections),
            "limits": self.limits.to_dict(),
            "policy": self.policy,
        }
