"""Settings of a model served by remote engines: `[[models]] engine = "openai" | "ollama" | "garrison"`."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from garrison.errors import ConfigError

Capability = Literal["chat", "completions", "embeddings", "tools", "fim"]
TrustLevel = Literal["public", "internal", "confidential", "restricted"]
RoutingPolicy = Literal["least_outstanding", "round_robin"]

_DEFAULT_CAPABILITIES: dict[str, list[Capability]] = {
    "generate": ["chat", "completions", "fim"],
    "embed": ["embeddings"],
}


class UpstreamTimeouts(BaseModel):
    """How long garrison waits on a replica, in seconds."""

    model_config = ConfigDict(extra="forbid")

    connect: float = Field(default=2.0, gt=0, description="TCP (and TLS) connect to a replica.")
    first_token: float = Field(
        default=60.0, gt=0, description="From sending the request to the first streamed chunk (or an error)."
    )
    idle: float = Field(default=30.0, gt=0, description="Between two chunks of a stream.")
    total: float = Field(default=600.0, gt=0, description="A whole non-streamed answer (completions, embeddings).")


class HealthCheckConfig(BaseModel):
    """Active health checks: each replica is probed on its model listing (also where integrity is checked)."""

    model_config = ConfigDict(extra="forbid")

    interval: float = Field(default=5.0, ge=0, description="Seconds between probes of a replica; 0 turns them off.")
    timeout: float = Field(default=2.0, gt=0, description="Seconds a probe may take before it counts as failed.")


class UpstreamTls(BaseModel):
    """TLS toward the replicas (https URLs): whom to trust, and the client certificate for mutual TLS."""

    model_config = ConfigDict(extra="forbid")

    ca_file: Path | None = Field(
        default=None, description="CA bundle that verifies the replicas' certificates (default: the system's)."
    )
    cert_file: Path | None = Field(default=None, description="Client certificate chain, PEM (mutual TLS).")
    key_file: Path | None = Field(default=None, description="Its private key, PEM.")

    @model_validator(mode="after")
    def _pair(self) -> UpstreamTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file go together")
        return self

    def context(self) -> ssl.SSLContext | None:
        """The client context (None: aiohttp's default verification); ConfigError when a file cannot be read."""
        if self.ca_file is None and self.cert_file is None:
            return None
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
            if self.cert_file is not None and self.key_file is not None:
                context.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"upstream TLS files cannot be loaded: {exc}") from None
        return context


class UpstreamModelConfig(BaseModel):
    """A model served by OpenAI-compatible (vLLM, TGI, llama-server, another garrison) or Ollama replicas."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, description="Stable model id clients use, e.g. 'llama-70b'.")
    engine: Literal["openai", "ollama", "garrison"] = Field(
        description="'openai': an OpenAI-compatible API (base URL ends in /v1); 'ollama': Ollama's native /api; "
        "'garrison': a central garrison's /v1, each request carrying a token signed by this gateway."
    )
    upstreams: list[str] = Field(
        min_length=1, description="Replica base URLs, e.g. ['http://gpu1:8000/v1'] or ['http://ws1:11434']."
    )
    upstream_model: str | None = Field(
        default=None, description="The model name the upstream knows (default: the same as `id`)."
    )
    kind: Literal["generate", "embed"] = Field(default="generate", description="Text generation or embeddings.")
    capabilities: list[Capability] | None = Field(
        default=None,
        description="What the upstream model can do (default: chat, completions, fim; embeddings for kind=embed).",
    )
    api_key_env: str | None = Field(
        default=None, description="Environment variable holding the upstreams' API key (sent as a bearer token)."
    )
    context_length: int | None = Field(
        default=None, ge=1, description="The upstream's context window in tokens (sent to Ollama as num_ctx)."
    )
    trust: TrustLevel = Field(
        default="internal", description="The highest data classification this model's upstreams may receive."
    )
    revision: str | None = Field(
        default=None,
        description="Pinned model identity as the upstream reports it (vLLM /v1/models `root`, Ollama digest); "
        "replicas reporting anything else are not routed to.",
    )
    routing: RoutingPolicy = Field(default="least_outstanding", description="How a replica is chosen.")
    retries: int = Field(
        default=2, ge=0, description="Further replicas tried after a connection error or 5xx before the first byte."
    )
    eject_after: int = Field(
        default=3, ge=1, description="Consecutive failures after which a replica is ejected from routing."
    )
    eject_for: float = Field(default=10.0, gt=0, description="Seconds an ejected replica stays out (cooldown).")
    max_connections: int = Field(default=256, ge=1, description="Pooled connections per replica.")
    timeouts: UpstreamTimeouts = Field(default_factory=UpstreamTimeouts, description="Per-upstream timeouts.")
    tls: UpstreamTls = Field(default_factory=UpstreamTls, description="TLS toward https replicas.")
    audience: str | None = Field(
        default=None, description="engine = 'garrison': the central tier's `federation.name` (tokens' `aud`)."
    )
    health: HealthCheckConfig = Field(default_factory=HealthCheckConfig, description="Active health checks.")

    @field_validator("upstreams")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        clean: list[str] = []
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"upstream '{url}' is not an http(s) URL with a host")
            if parts.query or parts.fragment or parts.username or parts.password:
                raise ValueError(
                    f"upstream '{url}' must be a plain base URL (put credentials in api_key_env, not the URL)"
                )
            clean.append(url.rstrip("/"))
        if len(set(clean)) != len(clean):
            raise ValueError("the same upstream URL is listed twice")
        return clean

    @model_validator(mode="after")
    def _defaults(self) -> UpstreamModelConfig:
        if self.engine == "ollama":  # Ollama's root URL; forgive a trailing /api
            self.upstreams = [u.removesuffix("/api") for u in self.upstreams]
        if self.capabilities is None:
            self.capabilities = list(_DEFAULT_CAPABILITIES[self.kind])
        if self.engine == "garrison":
            if not self.audience:
                raise ValueError("engine = 'garrison' needs `audience`: the central tier's federation.name")
            if self.api_key_env is not None:
                raise ValueError("engine = 'garrison' authenticates with signed tokens, not api_key_env")
        elif self.audience is not None:
            raise ValueError("`audience` is for engine = 'garrison' only")
        return self

    @property
    def remote_name(self) -> str:
        return self.upstream_model or self.id

    def api_key(self) -> str | None:
        """The key from `api_key_env` (never logged); ConfigError when the variable is named but empty."""
        if self.api_key_env is None:
            return None
        value = os.environ.get(self.api_key_env, "")
        if not value:
            raise ConfigError(
                f"model '{self.id}': api_key_env names {self.api_key_env}, but that environment variable is "
                "not set"
            )
        return value
