"""Who is calling: the verified identity, permissions and limits of one API key, as every check sees it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ENVIRONMENTS: tuple[str, ...] = ("dev", "staging", "prod")
SCOPES: tuple[str, ...] = ("chat", "completions", "embeddings", "metrics", "admin")
DEFAULT_SCOPES: tuple[str, ...] = ("chat", "completions", "embeddings")
CLEARANCES: tuple[str, ...] = ("public", "internal", "confidential", "restricted")
ANY_MODEL = "*"


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

    @classmethod
    def anonymous(cls, env: str = "dev") -> Principal:
        """The caller when auth is disabled: everything allowed, no key, no limits."""
        return cls(key_id="", name="anonymous", env=env, scopes=frozenset(SCOPES),
                   models=frozenset({ANY_MODEL}), clearance=CLEARANCES[-1])

    @property
    def is_anonymous(self) -> bool:
        return not self.key_id

    def has_scope(self, scope: str) -> bool:
        """Whether the key holds `scope`; `admin` also grants `metrics` (a scraper needs nothing else)."""
        return scope in self.scopes or (scope == "metrics" and "admin" in self.scopes)

    def allows_model(self, model: str) -> bool:
        return ANY_MODEL in self.models or model in self.models

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
            "limits": self.limits.to_dict(),
        }
