"""Access control: hashed API keys, scopes, environments, quotas, and the audit log they feed."""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from garrison.audit.log import AuditLog
from garrison.audit.spool import AuditSpool
from garrison.errors import ConfigError
from garrison.security import outage
from garrison.security.federation import load_verifier
from garrison.security.guard import Guard
from garrison.security.keys import KeyStore, load_server_secret, write_private_file
from garrison.security.principal import Limits, Principal
from garrison.security.shared_limits import open_limits
from garrison.security.usage import UsageLedger
from garrison.settings import Settings
from garrison.store import Store, open_store
from garrison.store.times import Clock

__all__ = ["Guard", "Limits", "Principal", "Security", "connect", "is_loopback", "setup"]

log = logging.getLogger("garrison.security")


@dataclass
class Security:
    """Everything access control needs at request time, opened once per process."""

    store: Store
    keys: KeyStore
    usage: UsageLedger
    guard: Guard
    audit: AuditLog
    env: str
    auth_enabled: bool = True
    public_paths: frozenset[str] = frozenset({"/health"})
    audit_exclude_paths: frozenset[str] = frozenset({"/health"})
    bootstrap_key: str | None = field(default=None, repr=False)
    offline: outage.OfflineQuotas | None = None  # admissions while a shared store is unreachable
    # A key check or quota admission may wait on a server (PostgreSQL store, Redis limits): a round trip, and
    # in an outage a connect timeout. The HTTP layer then runs them off the event loop (api/access.py).
    networked: bool = False

    def store_outage(self, exc: BaseException) -> bool:
        """Whether `exc` is the shared store being unreachable and this gateway rides it out (degraded)."""
        return self.offline is not None and self.store.is_outage(exc)

    def close(self) -> None:
        """Close the store's connections (call on server shutdown)."""
        self.guard.quotas.close()
        if self.offline is not None:
            self.offline.close()
        self.store.close()

    def health(self) -> dict[str, dict[str, Any]]:
        """The state of shared backends (`state` ok or degraded), for /health; replays queued audit records."""
        checks: dict[str, dict[str, Any]] = {"limits": dict(self.guard.quotas.health())}
        spool = self.audit.spool
        if self.offline is not None and spool is not None:
            try:
                reachable = self.audit.ready() and self.store.fetchone("SELECT 1") is not None
            except self.store.errors as exc:
                if not self.store.is_outage(exc):
                    raise
                reachable = False
            cache = self.keys.cache
            checks["store"] = outage.health(reachable, spool.count(), len(cache) if cache is not None else 0)
        return checks


def secret_path(settings: Settings) -> Path:
    """Where the server's HMAC secret lives (default GARRISON_HOME/server.secret)."""
    return settings.auth.secret_file or settings.home / "server.secret"


def admin_key_path(settings: Settings) -> Path:
    """Where the first admin key is written (default GARRISON_HOME/admin.key)."""
    return settings.auth.admin_key_file or settings.home / "admin.key"


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the server reachable from this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def connect(settings: Settings, *, clock: Clock = time.time) -> Security:
    """Open (and migrate) the store; build keys, guard and audit log; create no key (the CLI uses this)."""
    settings.ensure_home()
    store = open_store(settings)
    try:
        secret = load_server_secret(secret_path(settings))
    except BaseException:
        store.close()
        raise
    env = settings.auth.env
    keys = KeyStore(store, secret, clock)
    usage = UsageLedger(store)
    lim = settings.limits
    quotas = open_limits(lim.url, store, usage, clock, retry_s=lim.retry_s, timeout_s=lim.timeout_s, prefix=lim.prefix)
    audit = AuditLog(store, env=env, secret=secret, content=settings.audit.content, clock=clock,
                     group_commit=settings.audit.group_commit, durability=settings.audit.durability)
    offline = None
    shared = store.dialect != "sqlite"  # a database server several gateways use
    if shared:  # a shared store can be away: ride out its outage (security/outage.py)
        keys.cache = outage.KeyCache(settings.store.key_cache_size, settings.store.outage_grace, clock)
        audit.spool = AuditSpool(settings.home / "audit-spool.jsonl", settings.store.spool_max_bytes)
        audit.replay_usage = usage.record
        offline = outage.OfflineQuotas(quotas, clock)
    guard = Guard(keys, quotas, env, clock)
    try:
        guard.peers = load_verifier(settings, clock, store if shared else None)
    except BaseException:
        store.close()
        raise
    return Security(
        store=store,
        keys=keys,
        usage=usage,
        guard=guard,
        audit=audit,
        offline=offline,
        networked=shared or bool(lim.url),
        env=env,
        auth_enabled=settings.auth.enabled,
        public_paths=frozenset(settings.auth.public_paths),
        audit_exclude_paths=frozenset(settings.audit.exclude_paths),
    )


def setup(settings: Settings, *, clock: Clock = time.time) -> Security:
    """Server start-up: refuse --no-auth off loopback, open the store, and create the first admin key if none.

    The first admin key (all scopes, every model) is made only when the server's environment has no key at
    all; it is written to `admin_key_file` (0600) and returned once as `bootstrap_key`.
    """
    if not settings.auth.enabled and not is_loopback(settings.host):
        raise ConfigError(
            f"--no-auth is refused: the server would bind to '{settings.host}', which is not loopback; "
            "bind to 127.0.0.1 (or ::1) or keep auth on"
        )
    security = connect(settings, clock=clock)
    if not settings.auth.enabled:
        log.warning("auth is disabled: every request is allowed (loopback only); requests are still audited")
        return security
    try:
        issued = security.keys.bootstrap_admin(security.env)
        if issued is not None:
            path = admin_key_path(settings)
            write_private_file(path, issued.token + "\n")
            security.bootstrap_key = issued.token
            log.warning(
                "created the first admin key %s for '%s'; written to %s", issued.record.id, security.env, path
            )
    except BaseException:
        security.close()
        raise
    return security
