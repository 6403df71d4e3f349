"""One settings model for the whole platform: flags > GARRISON_* env > garrison.toml > defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

EMBEDDED_MODEL_ID = "smollm2-135m-instruct"
EMBEDDING_MODEL_ID = "all-minilm-l6-v2"


Classification = Literal["public", "internal", "confidential", "restricted"]


class ModelConfig(BaseModel):
    """A served model: by default a GGUF file on the embedded llama engine, pinned by digest."""

    id: str = Field(description="Stable model id clients use, e.g. 'qwen2.5-coder-1.5b'.")
    engine: str = Field(
        default="llama", description="The engine that serves this model ('llama' = embedded llama.cpp)."
    )
    path: Path | None = Field(default=None, description="Path to the model file (a GGUF for 'llama').")
    trust: Classification = Field(
        default="restricted",
        description="The highest data classification this model may see (public < internal < confidential "
        "< restricted); in-process models see everything, upstream ones should be set lower.",
    )
    sha256: str | None = Field(
        default=None, description="Pinned sha256 of the file; start-up refuses a file whose digest differs."
    )
    context_length: int | None = Field(
        default=None, description="Context window in tokens; defaults to the engine setting capped by the model."
    )
    chat_template: str | None = Field(
        default=None, description="Jinja chat template overriding the one in the GGUF metadata."
    )
    n_gpu_layers: int | None = Field(
        default=None, description="Layers to offload to the GPU (-1 = all); defaults to the engine setting."
    )


class EngineSettings(BaseModel):
    """How the embedded llama.cpp engine runs."""

    threads: int | None = Field(default=None, description="CPU threads for decoding (default: all cores).")
    context_length: int = Field(default=4096, description="Default context window per sequence, in tokens.")
    max_concurrent_sequences: int = Field(
        default=8, description="Sequences decoded together in one batch (KV cache slots)."
    )
    batch_size: int = Field(default=512, description="Maximum tokens submitted in one decode step.")
    prefill_budget: int = Field(
        default=128, ge=1,
        description="Most prompt tokens prefilled in one step while other sequences generate (bounds their "
        "inter-token latency; raise it on a GPU).",
    )
    n_gpu_layers: int = Field(default=0, description="Layers to offload to the GPU (-1 = all, 0 = CPU only).")
    max_queue: int = Field(
        default=64, description="Requests allowed to wait for a slot; beyond this the server answers 503."
    )
    prefix_cache: bool = Field(default=True, description="Reuse the KV cache of shared prompt prefixes.")
    embeddings: bool = Field(default=True, description="Serve the all-MiniLM-L6-v2 embedding model.")


class AuthSettings(BaseModel):
    """API key authentication."""

    enabled: bool = Field(default=True, description="Require API keys (disable only on loopback).")
    env: Literal["dev", "staging", "prod"] = Field(
        default="dev", description="The environment this server serves; only keys of it are accepted."
    )
    public_paths: list[str] = Field(
        default_factory=lambda: ["/health"], description="Paths served without an API key (exact match)."
    )
    secret_file: Path | None = Field(
        default=None,
        description="HMAC secret for key hashes and audit signatures (default: GARRISON_HOME/server.secret).",
    )
    admin_key_file: Path | None = Field(
        default=None, description="File for the first admin key, 0600 (default: GARRISON_HOME/admin.key)."
    )


class AuditSettings(BaseModel):
    """The tamper-evident audit log."""

    content: Literal["none", "hash", "full"] = Field(
        default="none", description="Store prompts/responses: not at all, as SHA-256, or in full."
    )
    exclude_paths: list[str] = Field(
        default_factory=lambda: ["/health"], description="Paths left out of the audit log (liveness probes)."
    )


class Settings(BaseSettings):
    """Every setting garrison reads, with its source precedence flags > env > toml > defaults."""

    model_config = SettingsConfigDict(
        env_prefix="GARRISON_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    home: Path = Field(
        default=Path("~/.garrison"), description="Directory holding all state (keys, audit log, usage)."
    )
    config_file: Path | None = Field(default=None, description="Path of the garrison.toml that was read.")
    host: str = Field(default="127.0.0.1", description="Address to bind.")
    port: int = Field(default=8400, ge=0, le=65535, description="Port to bind.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Log level.")
    log_format: Literal["text", "json"] = Field(default="text", description="Log line format.")
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 beyond)."
    )
    default_model: bool = Field(
        default=True, description="Serve the embedded SmolLM2-135M-Instruct in addition to [[models]]."
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy-style URL of the store (default: sqlite under home)."
    )
    models: list[ModelConfig] = Field(default_factory=list, description="Additional GGUF models.")
    engine: EngineSettings = Field(default_factory=EngineSettings, description="Embedded engine settings.")
    auth: AuthSettings = Field(default_factory=AuthSettings, description="Authentication settings.")
    audit: AuditSettings = Field(default_factory=AuditSettings, description="Audit log settings.")

    @field_validator("home")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = _toml_path()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    @property
    def sqlite_path(self) -> Path:
        return self.home / "garrison.db"

    def ensure_home(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.home


def _toml_path() -> Path | None:
    """The garrison.toml to read: GARRISON_CONFIG, else ./garrison.toml, else GARRISON_HOME/garrison.toml."""
    explicit = os.environ.get("GARRISON_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    local = Path("garrison.toml")
    if local.is_file():
        return local
    home = Path(os.environ.get("GARRISON_HOME", "~/.garrison")).expanduser() / "garrison.toml"
    return home if home.is_file() else None


def load_settings(**overrides: Any) -> Settings:
    """Load settings once; keyword overrides (CLI flags) win over every other source."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    settings = Settings(**clean)
    toml_path = _toml_path()
    if toml_path is not None and settings.config_file is None:
        settings = settings.model_copy(update={"config_file": toml_path.resolve()})
    return settings
