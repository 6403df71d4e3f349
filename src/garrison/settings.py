"""One settings model for the whole platform: flags > GARRISON_* env > garrison.toml > defaults."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

log = logging.getLogger("garrison.settings")

EMBEDDED_MODEL_ID = "smollm2-135m-instruct"
EMBEDDING_MODEL_ID = "all-minilm-l6-v2"


Classification = Literal["public", "internal", "confidential", "restricted"]


class ModelConfig(BaseModel):
    """A served model: by default a GGUF file on the embedded llama engine, pinned by digest.

    Fields of other engines (`upstreams`, `upstream_model`, ... for "openai" and "ollama": docs/upstreams.md)
    are kept for that engine's loader, which checks them; the llama engine refuses any it does not know.
    """

    model_config = ConfigDict(extra="allow")

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

    threads: int | None = Field(
        default=None, ge=1,
        description="The most CPU threads llama.cpp uses for a step (default: every usable core); see "
        "adaptive_threads and docs/engine.md.",
    )
    adaptive_threads: bool = Field(
        default=True,
        description="Use half the threads (at least one) while other processes keep the CPUs busy, all of them "
        "while the machine is quiet (measured every 0.3 s); false: always `threads`.",
    )
    cpu_extra_buffers: Literal["auto", "on", "repack", "off"] = Field(
        default="auto",
        description="llama.cpp's repacked weight buffers: 'on' (all, AMX included), 'repack' (CPU_REPACK but "
        "never AMX), 'off' (plain CPU buffers), 'auto' ('repack' on an AMX build, else 'on'). See docs/engine.md.",
    )
    cache_type_k: Literal["auto", "f16", "bf16"] = Field(
        default="auto",
        description="Element type of the KV cache's keys (values stay f16): 'bf16' sends every attention shape "
        "to ggml's per-row kernel (answers independent of the batch, no padded lone steps, faster long-context "
        "decode); 'auto': bf16 for models on the CPU where it and the llama.cpp build have bf16 vector code "
        "(x86-64 AVX2, arm64 BF16) and batch_invariant is on, else f16. See docs/engine.md.",
    )
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
    batch_invariant: bool = Field(
        default=True,
        description="Keep each sequence's numbers independent of what else is in the batch: prompts go in chunks "
        "of at most 63 rows, and with f16 keys (cache_type_k) a lone one-token step past 256 KV cells gets a "
        "padding row when steps use 2+ threads; false: whole prompts per step and no padding, faster first "
        "tokens, answers may depend on the batch (docs/engine.md).",
    )
    raw_prompt_control_tokens: bool = Field(
        default=False,
        description="Let completion prompts (/v1/completions, Ollama raw generate) spell control tokens such "
        "as <|im_start|>; off: that text is plain text, and only chat templates and FIM layouts make them.",
    )
    embeddings: bool = Field(default=True, description="Serve the all-MiniLM-L6-v2 embedding model.")


Clearance = Literal["public", "internal", "confidential", "restricted"]


class OidcRule(BaseModel):
    """What a person gets when their ID token's `claim` equals `value` (or, for a list claim, contains it)."""

    model_config = ConfigDict(extra="forbid")

    claim: str = Field(description="ID token (or userinfo) claim to look at, e.g. 'groups'.")
    value: str = Field(description="The value that triggers this rule, e.g. 'garrison-admins'.")
    role: Literal["admin", "user"] | None = Field(default=None, description="Role granted (admin wins).")
    clearance: Clearance | None = Field(default=None, description="Clearance granted (the highest one wins).")
    scopes: list[str] = Field(default_factory=list, description="Scopes added to the defaults.")
    models: list[str] = Field(default_factory=list, description="Models added to the defaults ('*' = all).")
    collections: list[str] = Field(
        default_factory=list, description="Document collections added to the defaults ('*' = all)."
    )


class OidcSettings(BaseModel):
    """Single sign-on to the console through an OpenID Connect provider (authorization code + PKCE)."""

    model_config = ConfigDict(extra="forbid")

    issuer: str = Field(description="The provider's issuer URL; its /.well-known/openid-configuration is read.")
    client_id: str = Field(description="This garrison's client id at the provider.")
    client_secret_env: str = Field(
        default="GARRISON_OIDC_CLIENT_SECRET",
        description="Environment variable holding the client secret (never put the secret in garrison.toml).",
    )
    redirect_url: str | None = Field(
        default=None,
        description="Callback registered at the provider (default: this server's /console/oidc/callback).",
    )
    scopes: list[str] = Field(
        default_factory=lambda: ["openid", "profile", "email"], description="Scopes asked for."
    )
    username_claim: str = Field(default="preferred_username", description="Claim used as the username.")
    label: str = Field(default="Sign in with single sign-on", description="Text of the sign-in button.")
    default_role: Literal["admin", "user"] = Field(default="user", description="Role when no rule says more.")
    default_clearance: Clearance = Field(default="public", description="Clearance when no rule says more.")
    default_scopes: list[str] = Field(default_factory=lambda: ["chat"], description="Scopes every person gets.")
    default_models: list[str] = Field(default_factory=lambda: ["*"], description="Models every person gets.")
    default_collections: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Document collections every person may read ('*' = all; set [] to grant them only by rule).",
    )
    require_rule: bool = Field(default=False, description="Refuse people whom no rule matches.")
    rules: list[OidcRule] = Field(default_factory=list, description="Claim -> role/clearance/scopes mapping.")
    timeout_s: float = Field(default=10.0, gt=0, description="Timeout of each request to the provider.")


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
    oidc: OidcSettings | None = Field(default=None, description="Console single sign-on (off when unset).")


class ConsoleSettings(BaseModel):
    """The web console at /console: sessions, sign-in throttling and chat defaults."""

    enabled: bool = Field(default=True, description="Serve the console at /console.")
    idle_timeout_s: int = Field(default=1800, ge=30, description="A session ends after this long unused.")
    session_lifetime_s: int = Field(default=43200, ge=60, description="A session ends this long after sign-in.")
    secure_cookies: Literal["auto", "always", "never"] = Field(
        default="auto", description="Mark cookies Secure: when served over TLS (auto), always, or never."
    )
    login_failures_per_user: int = Field(
        default=5, ge=1, description="Failed sign-ins allowed per username within login_window_s."
    )
    login_failures_per_client: int = Field(
        default=20, ge=1, description="Failed sign-ins allowed per client address within login_window_s."
    )
    login_window_s: int = Field(default=900, ge=1, description="The window failed sign-ins are counted in.")
    max_tokens: int = Field(default=512, ge=1, description="Longest console reply, in tokens.")
    history_messages: int = Field(
        default=20, ge=1, description="Earlier messages of a conversation sent with each question."
    )


class AuditSettings(BaseModel):
    """The tamper-evident audit log."""

    content: Literal["none", "hash", "full"] = Field(
        default="none", description="Store prompts/responses: not at all, as SHA-256, or in full."
    )
    exclude_paths: list[str] = Field(
        default_factory=lambda: ["/health"], description="Paths left out of the audit log (liveness probes)."
    )
    group_commit: bool = Field(
        default=True,
        description="Make concurrent requests' audit records durable with one shared fsync (each request is "
        "still answered only once its own record is on disk).",
    )
    durability: Literal["admission", "answer"] = Field(
        default="admission",
        description="When audit records reach the disk. 'admission': a request's admission record is durable "
        "before the engine runs and its end before the answer (two fsyncs). 'answer' (with group commit): "
        "only before the answer (one fsync); a power loss can lose the admission of requests still running.",
    )


Label = Literal["public", "internal", "confidential", "restricted"]


class DocumentRoot(BaseModel):
    """A designated storage root: garrison reads documents only inside it (symlinks and `..` resolved)."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Field(description="Directory holding the documents (resolved; must exist when used).")
    collection: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="Collection name the root's documents belong to."
    )
    label: Label = Field(
        default="internal", description="Default classification of its documents (Markdown front matter overrides)."
    )
    upload: bool = Field(default=False, description="Accept uploads (POST /v1/documents) into this root.")


class DocumentsSettings(BaseModel):
    """Private documents: storage roots, sync and limits."""

    roots: list[DocumentRoot] = Field(default_factory=list, description="Designated storage roots.")
    sync_interval: float = Field(
        default=300.0, ge=0, description="Seconds between the server's re-syncs of the roots (0: never)."
    )
    max_file_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1, description="Largest document ingested or uploaded (413 beyond)."
    )
    index_path: Path | None = Field(
        default=None, description="SQLite file of the documents index (default: GARRISON_HOME/documents.db)."
    )

    @field_validator("roots")
    @classmethod
    def _unique_collections(cls, roots: list[DocumentRoot]) -> list[DocumentRoot]:
        seen: set[str] = set()
        for root in roots:
            if root.collection in seen:
                raise ValueError(f"collection '{root.collection}' is named by two roots; give each root its own")
            seen.add(root.collection)
        return roots


class KnowledgeModel(BaseModel):
    """A model id that answers from documents: every request to it retrieves from `collections` first."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="The model id clients pick, e.g. 'handbook'.")
    model: str = Field(description="The served chat model that writes the answer.")
    collections: list[str] = Field(min_length=1, description="Collections retrieved from.")
    k: int = Field(default=4, ge=1, le=32, description="Chunks retrieved per request.")
class StoreSettings(BaseModel):
    """Where keys, usage, quota reservations and the audit chain live."""

    url: str | None = Field(
        default=None,
        description="sqlite:///PATH or postgresql://USER:PASS@HOST:PORT/DB (docs/scale.md); unset: SQLite "
        "under home. `database_url` is the older name of this setting and still read.",
    )
    outage_grace: float = Field(
        default=300.0, ge=0,
        description="Seconds a key verified before a PostgreSQL outage keeps working from memory during it.",
    )
    key_cache_size: int = Field(default=10_000, ge=1, description="Most verified keys held for an outage.")
    spool_max_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1024,
        description="Largest local queue of audit records during an outage (beyond it requests fail closed).",
    )


class LimitsSettings(BaseModel):
    """Where rate-limit buckets live: the store (default; per store) or Redis, shared by every gateway."""

    url: str | None = Field(
        default=None,
        description="redis://HOST:PORT/DB: rpm/tpm buckets shared by every gateway (docs/scale.md); unset: "
        "buckets in the store, so only processes sharing one store share limits.",
    )
    retry_s: float = Field(default=2.0, gt=0, description="Seconds before an unreachable Redis is tried again.")
    timeout_s: float = Field(default=0.25, gt=0, description="Connect and read timeout of each Redis call.")
    prefix: str = Field(default="garrison", description="Prefix of garrison's Redis keys.")


class FederationPeer(BaseModel):
    """A local gateway this (central) one accepts forwarded requests from: docs/scale.md, "Tiers"."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="The peer's `federation.name` (the `iss` and `act` of its tokens).",
    )
    public_key: str = Field(
        description="Its Ed25519 public key: a PEM file path, the PEM text, or base64 of the raw 32 bytes "
        "(`garrison federation public-key` on the peer prints it)."
    )
    max_clearance: Clearance = Field(
        default="internal",
        description="The highest clearance requests from this peer get, whatever its token claims.",
    )
    scopes: list[str] = Field(
        default_factory=lambda: ["chat", "completions", "embeddings", "documents"],
        description="Scopes a token from this peer may carry (the token's scopes are intersected with these).",
    )
    models: list[str] = Field(default_factory=lambda: ["*"], description="Models its users may call ('*' = all).")
    collections: list[str] = Field(
        default_factory=lambda: ["*"], description="Document collections its users may read ('*' = all)."
    )
    rpm: int | None = Field(default=None, ge=1, description="Requests per minute of the whole peer.")
    tpm: int | None = Field(default=None, ge=1, description="Tokens per minute of the whole peer.")
    daily_tokens: int | None = Field(default=None, ge=1, description="Daily token budget of the whole peer.")


class FederationSettings(BaseModel):
    """Tiers: this gateway's identity toward others, and the peers it trusts (docs/scale.md, "Tiers")."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="This gateway's name: the issuer of the tokens it signs, the audience of those it accepts.",
    )
    key_file: Path | None = Field(
        default=None,
        description="Its Ed25519 signing key, PEM (default: GARRISON_HOME/federation.key, created 0600 if missing).",
    )
    token_ttl_s: float = Field(
        default=30.0, gt=0, le=60, description="Lifetime of each token this gateway signs (a central tier "
        "refuses tokens meant to live longer than 60 s)."
    )
    peers: list[FederationPeer] = Field(
        default_factory=list, description="[[federation.peers]]: local gateways whose tokens this one accepts."
    )
    replay_capacity: int = Field(
        default=100_000, ge=1000, description="Unexpired peer token ids remembered against replay (per process); "
        "when all are still live, further peer tokens get 503 with Retry-After until one expires."
    )

    @field_validator("peers")
    @classmethod
    def _unique_peers(cls, peers: list[FederationPeer]) -> list[FederationPeer]:
        names = [p.name for p in peers]
        if len(set(names)) != len(names):
            raise ValueError("a federation peer is listed twice")
        return peers


class TlsSettings(BaseModel):
    """HTTPS for `garrison serve`, and optionally client certificates (mutual TLS)."""

    model_config = ConfigDict(extra="forbid")

    cert_file: Path | None = Field(default=None, description="Server certificate chain, PEM (unset: plain HTTP).")
    key_file: Path | None = Field(default=None, description="Its private key, PEM.")
    client_ca_file: Path | None = Field(
        default=None, description="CA bundle that client certificates must chain to (mutual TLS)."
    )
    client_cert: Literal["none", "optional", "required"] = Field(
        default="none",
        description="Ask clients for a certificate: not at all, optionally, or required (the TLS handshake "
        "fails without one); optional and required need client_ca_file.",
    )

    @model_validator(mode="after")
    def _complete(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file go together")
        if self.client_cert != "none" and (self.client_ca_file is None or self.cert_file is None):
            raise ValueError("tls.client_cert needs tls.cert_file, tls.key_file and tls.client_ca_file")
        return self

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


GuardWhat = Literal["pii", "secrets", "injection", "blocklist"]
GuardWhere = Literal["input", "retrieved", "output"]
GuardAction = Literal["redact", "block", "flag"]


class GuardRule(BaseModel):
    """One guardrail rule: what to look for, where, and what to do when it is found."""

    model_config = ConfigDict(extra="forbid")

    what: GuardWhat = Field(description="pii, secrets, injection (a score) or blocklist (terms).")
    where: list[GuardWhere] = Field(
        default_factory=lambda: list[GuardWhere](["input"]), description="Where it applies: input, retrieved, output."
    )
    action: GuardAction = Field(description="redact (placeholders), block (400 policy_violation) or flag.")
    name: str | None = Field(
        default=None, description="Name used in errors, audit and metrics (default: '<what>-<action>')."
    )
    types: list[str] | None = Field(
        default=None, description="Only these span types (e.g. EMAIL, CARD, JWT); default: all of `what`."
    )
    threshold: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Injection score at or above which the rule fires."
    )
    terms: list[str] = Field(default_factory=list, description="Blocklist terms (case-insensitive words).")

    @field_validator("where", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _sensible(self) -> GuardRule:
        if self.what == "injection" and self.action == "redact":
            raise ValueError("an injection rule can block or flag, not redact (a score has no span)")
        if self.what == "blocklist" and not self.terms:
            raise ValueError("a blocklist rule needs terms")
        return self

    @property
    def label(self) -> str:
        return self.name or f"{self.what}-{self.action}"


class GuardPolicy(BaseModel):
    """A named set of guardrail rules, attached to keys, environments or knowledge models."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Policy name.")
    rules: list[GuardRule] = Field(default_factory=list, description="Rules applied in order.")
    rehydrate: bool = Field(
        default=False,
        description="Restore input placeholders ([EMAIL_1]) in the answer for the caller; the model never "
        "sees the originals.",
    )


class GuardrailSettings(BaseModel):
    """Offline guardrails: PII and secret redaction, injection screening, egress by data class."""

    policies: list[GuardPolicy] = Field(
        default_factory=list, description="[[guardrails.policies]]; these add to (or replace) the built-ins."
    )
    defaults: dict[str, str | None] = Field(
        default_factory=lambda: {"dev": None, "staging": None, "prod": "prod"},
        description="Policy per environment for keys without one ('prod' is built in; none: no guardrails).",
    )
    models: dict[str, str] = Field(
        default_factory=dict, description="Policy per model id (knowledge models); applied with the key's."
    )
    phone_region: str = Field(
        default="US", description="Region for phone numbers written without a +country prefix."
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
    shutdown_drain_s: float = Field(
        default=30.0, ge=0,
        description="On SIGTERM/Ctrl-C, seconds in-flight requests may take to finish; then they end with an error.",
    )
    default_model: bool = Field(
        default=True, description="Serve the embedded SmolLM2-135M-Instruct in addition to [[models]]."
    )
    database_url: str | None = Field(
        default=None, description="Alias of store.url, kept for existing configurations."
    )
    models: list[ModelConfig] = Field(default_factory=list, description="Additional GGUF models.")
    engine: EngineSettings = Field(default_factory=EngineSettings, description="Embedded engine settings.")
    auth: AuthSettings = Field(default_factory=AuthSettings, description="Authentication settings.")
    audit: AuditSettings = Field(default_factory=AuditSettings, description="Audit log settings.")
    documents: DocumentsSettings = Field(
        default_factory=DocumentsSettings, description="Private documents: roots, sync, limits."
    )
    knowledge: list[KnowledgeModel] = Field(
        default_factory=list, description="Knowledge models: chat models grounded in document collections."
    )
    store: StoreSettings = Field(default_factory=StoreSettings, description="The store backend.")
    limits: LimitsSettings = Field(default_factory=LimitsSettings, description="Shared rate limits (Redis).")
    guardrails: GuardrailSettings = Field(
        default_factory=GuardrailSettings, description="Guardrail policies ([[guardrails.policies]])."
    )
    console: ConsoleSettings = Field(default_factory=ConsoleSettings, description="Web console settings.")
    federation: FederationSettings = Field(
        default_factory=FederationSettings, description="Tiers: this gateway's name and key, trusted peers."
    )
    tls: TlsSettings = Field(default_factory=TlsSettings, description="HTTPS and mutual TLS of `garrison serve`.")

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

    @property
    def documents_path(self) -> Path:
        return self.documents.index_path or self.home / "documents.db"

    def ensure_home(self) -> Path:
        """Create the state directory, or tighten it to 0700 if group or others can reach it (warn if not)."""
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        mode = self.home.stat().st_mode & 0o777
        if mode & 0o077:
            try:
                self.home.chmod(0o700)
                log.warning("GARRISON_HOME %s was open to group or others (mode %o); tightened to 0700",
                            self.home, mode)
            except OSError as exc:
                log.warning("GARRISON_HOME %s is open to group or others (mode %o) and could not be "
                            "tightened (%s); run: chmod 700 %s", self.home, mode, exc, self.home)
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
