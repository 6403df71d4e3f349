"""Console users: local accounts (Argon2id password hashes) or single sign-on, each acting as a Principal.

A user carries what an API key carries (environment, scopes, models, clearance, limits, collections) plus a role:
`admin` sees the console's administration pages. Every request a user makes from the console runs as
`user.principal()`; personal API keys a user creates can never exceed the user's own permissions.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from garrison.errors import InvalidRequest, NotFound, PermissionDenied
from garrison.security.keys import IssuedKey, KeyRecord, KeyStore
from garrison.security.principal import ANY_COLLECTION, ANY_MODEL, CLEARANCES, ENVIRONMENTS, SCOPES, Limits, Principal
from garrison.store import Store
from garrison.store.times import Clock, from_iso, to_iso

ROLES: tuple[str, ...] = ("admin", "user")
SOURCES: tuple[str, ...] = ("local", "oidc")
USER_PRINCIPAL_PREFIX = "usr_"
MIN_PASSWORD_LENGTH = 12
_USERNAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@+-")


@dataclass(frozen=True, slots=True)
class UserRecord:
    """What the store knows about a user (never the password, only whether one is set)."""

    id: str
    username: str
    env: str
    role: str
    source: str
    scopes: tuple[str, ...]
    models: tuple[str, ...]
    clearance: str
    limits: Limits
    created_at: float
    display_name: str | None = None
    subject: str | None = None
    has_password: bool = False
    password_changed_at: float | None = None
    last_login_at: float | None = None
    disabled_at: float | None = None
    collections: tuple[str, ...] = (ANY_COLLECTION,)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def active(self) -> bool:
        return self.disabled_at is None

    @property
    def principal_id(self) -> str:
        """The key id under which this user's console requests are charged and audited."""
        return f"{USER_PRINCIPAL_PREFIX}{self.id}"

    def principal(self) -> Principal:
        """The identity every check sees for this user's console requests."""
        return Principal(
            key_id=self.principal_id,
            name=f"user:{self.username}",
            env=self.env,
            scopes=frozenset(self.scopes),
            models=frozenset(self.models),
            clearance=self.clearance,
            limits=self.limits,
            collections=frozenset(self.collections),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON view for `users list --json`; it carries no password material."""
        return {
            "id": self.id,
            "username": self.username,
            "display_name": self.display_name,
            "env": self.env,
            "role": self.role,
            "source": self.source,
            "scopes": list(self.scopes),
            "models": list(self.models),
            "clearance": self.clearance,
            "collections": list(self.collections),
            **self.limits.to_dict(),
            "status": "active" if self.active else "disabled",
            "created_at": to_iso(self.created_at),
            "password_changed_at": _iso_or_none(self.password_changed_at),
            "last_login_at": _iso_or_none(self.last_login_at),
            "disabled_at": _iso_or_none(self.disabled_at),
        }


@dataclass(frozen=True, slots=True)
class Grants:
    """What a user may do: the same fields an API key has, plus the role."""

    role: str = "user"
    scopes: tuple[str, ...] = ("chat",)
    models: tuple[str, ...] = (ANY_MODEL,)
    clearance: str = "public"
    limits: Limits = Limits()
    collections: tuple[str, ...] = (ANY_COLLECTION,)


class UserStore:
    """Users in the store. Passwords are kept only as Argon2id hashes (argon2-cffi's RFC 9106 profile)."""

    def __init__(self, store: Store, clock: Clock = time.time, hasher: PasswordHasher | None = None) -> None:
        self._store = store
        self._clock = clock
        self._hasher = hasher or PasswordHasher()
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    def create(
        self,
        *,
        username: str,
        env: str,
        grants: Grants,
        password: str | None = None,
        source: str = "local",
        subject: str | None = None,
        display_name: str | None = None,
    ) -> UserRecord:
        """Add a user (local users need a password; single sign-on users a subject)."""
        username = _check_username(username)
        _check_grants(env, grants)
        if source not in SOURCES:
            raise InvalidRequest(f"source must be one of {', '.join(SOURCES)}", param="source")
        if source == "local" and password is None:
            raise InvalidRequest("a local user needs a password", param="password")
        digest = self._hasher.hash(check_password(password)) if password is not None else None
        now = to_iso(self._clock())
        user_id = secrets.token_hex(6)
        try:
            self._store.execute(
                "INSERT INTO users (id, username, env, display_name, source, subject, password_hash, role, "
                "scopes, models, clearance, rpm, tpm, daily_tokens, created_at, password_changed_at, collections) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    user_id, username, env, display_name, source, subject, digest, grants.role,
                    ",".join(grants.scopes), ",".join(grants.models), grants.clearance, grants.limits.rpm,
                    grants.limits.tpm, grants.limits.daily_tokens, now, now if digest else None,
                    ",".join(grants.collections),
                ),
            )
        except sqlite3.IntegrityError:
            raise InvalidRequest(f"a user named '{username}' already exists in '{env}'", param="username") from None
        return self.get(user_id)

    def get(self, user_id: str) -> UserRecord:
        """One user by id (404 when unknown)."""
        row = self._store.fetchone("SELECT * FROM users WHERE id = ?", (user_id,))
        if row is None:
            raise NotFound(f"no user with id '{user_id}'", param="id")
        return _record(row)

    def find(self, env: str, username: str) -> UserRecord | None:
        """A user of `env` by username, or None."""
        row = self._store.fetchone("SELECT * FROM users WHERE env = ? AND username = ?", (env, username.strip()))
        return _record(row) if row else None

    def named(self, env: str, username: str) -> UserRecord:
        """A user of `env` by username (404 naming it when unknown)."""
        user = self.find(env, username)
        if user is None:
            raise NotFound(f"no user named '{username}' in '{env}'", param="username")
        return user

    def all(self, env: str | None = None) -> list[UserRecord]:
        """Every user (of one environment when given), by username."""
        sql, params = "SELECT * FROM users", tuple[str, ...]()
        if env is not None:
            sql, params = sql + " WHERE env = ?", (env,)
        return [_record(r) for r in self._store.fetchall(sql + " ORDER BY username", params)]

    def authenticate(self, env: str, username: str, password: str) -> UserRecord | None:
        """The active local user whose password this is, or None; costs one Argon2 verify either way."""
        row = self._store.fetchone(
            "SELECT * FROM users WHERE env = ? AND username = ? AND source = 'local'", (env, username.strip())
        )
        stored = row["password_hash"] if row is not None and row["password_hash"] else self._dummy_hash
        try:
            self._hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if row is None or row["disabled_at"] is not None:
            return None
        if self._hasher.check_needs_rehash(stored):
            self._store.execute(
                "UPDATE users SET password_hash = ? WHERE id = ?", (self._hasher.hash(password), row["id"])
            )
        return _record(row)

    def set_password(self, user_id: str, password: str) -> UserRecord:
        """Replace a local user's password (the caller ends the user's sessions)."""
        user = self.get(user_id)
        if user.source != "local":
            raise InvalidRequest(f"'{user.username}' signs in through single sign-on; it has no password")
        self._store.execute(
            "UPDATE users SET password_hash = ?, password_changed_at = ? WHERE id = ?",
            (self._hasher.hash(check_password(password)), to_iso(self._clock()), user_id),
        )
        return self.get(user_id)

    def disable(self, user_id: str) -> UserRecord:
        """Disable a user and revoke the personal keys it made (the caller ends its sessions)."""
        self.get(user_id)
        now = to_iso(self._clock())
        with self._store.transaction() as conn:
            conn.execute("UPDATE users SET disabled_at = ? WHERE id = ? AND disabled_at IS NULL", (now, user_id))
            conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL", (now, user_id)
            )
        return self.get(user_id)

    def enable(self, user_id: str) -> UserRecord:
        """Let a disabled user sign in again (its revoked keys stay revoked)."""
        self.get(user_id)
        self._store.execute("UPDATE users SET disabled_at = NULL WHERE id = ?", (user_id,))
        return self.get(user_id)

    def set_grants(self, user_id: str, grants: Grants) -> UserRecord:
        """Replace a user's role and permissions."""
        user = self.get(user_id)
        _check_grants(user.env, grants)
        self._store.execute(
            "UPDATE users SET role = ?, scopes = ?, models = ?, clearance = ?, rpm = ?, tpm = ?, daily_tokens = ?, "
            "collections = ? WHERE id = ?",
            (
                grants.role, ",".join(grants.scopes), ",".join(grants.models), grants.clearance,
                grants.limits.rpm, grants.limits.tpm, grants.limits.daily_tokens, ",".join(grants.collections),
                user_id,
            ),
        )
        return self.get(user_id)

    def signed_in(self, user_id: str) -> None:
        """Note a successful sign-in."""
        self._store.execute("UPDATE users SET last_login_at = ? WHERE id = ?", (to_iso(self._clock()), user_id))

    def provision(self, env: str, subject: str, username: str, display_name: str | None, grants: Grants) -> UserRecord:
        """The single sign-on user for `subject`, created on first sign-in and given the provider's grants."""
        row = self._store.fetchone("SELECT * FROM users WHERE env = ? AND subject = ?", (env, subject))
        if row is None:
            taken = self.find(env, username)
            name = username if taken is None else f"{username}-{secrets.token_hex(2)}"
            return self.create(
                username=name, env=env, grants=grants, source="oidc", subject=subject, display_name=display_name
            )
        self._store.execute("UPDATE users SET display_name = ? WHERE id = ?", (display_name, row["id"]))
        return self.set_grants(row["id"], grants)

    def create_key(
        self,
        user: UserRecord,
        keys: KeyStore,
        *,
        name: str,
        scopes: Sequence[str],
        models: Sequence[str],
        clearance: str,
        limits: Limits,
        expires_at: float | None = None,
    ) -> IssuedKey:
        """A personal API key for `user`, refused (403 naming the field) beyond the user's own permissions."""
        principal = user.principal()
        extra = sorted(set(scopes) - set(user.scopes))
        if extra:
            raise PermissionDenied(f"you may not grant the scopes {', '.join(extra)}", param="scopes")
        if ANY_MODEL not in user.models and not set(models) <= set(user.models):
            raise PermissionDenied(
                f"you may grant only your own models ({', '.join(user.models)})", param="models"
            )
        if clearance not in CLEARANCES or not principal.cleared_for(clearance):
            raise PermissionDenied(
                f"you may grant a clearance up to '{user.clearance}'", param="clearance"
            )
        capped = _cap_limits(user.limits, limits)
        with self._store.transaction() as conn:
            issued = keys.create(
                name=name, env=user.env, scopes=scopes, models=models, clearance=clearance,
                limits=capped, expires_at=expires_at, collections=user.collections,
            )
            conn.execute("UPDATE api_keys SET user_id = ? WHERE id = ?", (user.id, issued.record.id))
        return issued

    def keys_of(self, user_id: str, keys: KeyStore) -> list[KeyRecord]:
        """The personal keys a user made, newest first."""
        ids = {r["id"] for r in self._store.fetchall("SELECT id FROM api_keys WHERE user_id = ?", (user_id,))}
        return [k for k in keys.all() if k.id in ids]

    def owners(self) -> dict[str, str]:
        """key id -> username of its owner, for every personal key and every user's own principal id."""
        rows = self._store.fetchall(
            "SELECT k.id AS key_id, u.username FROM api_keys k JOIN users u ON u.id = k.user_id"
        )
        out = {r["key_id"]: r["username"] for r in rows}
        for user in self.all():
            out[user.principal_id] = user.username
        return out


def check_password(password: str | None) -> str:
    """A password good enough to store: at least 12 characters, not only spaces."""
    if password is None or len(password) < MIN_PASSWORD_LENGTH or not password.strip():
        raise InvalidRequest(f"a password needs at least {MIN_PASSWORD_LENGTH} characters", param="password")
    if len(password) > 1024:
        raise InvalidRequest("a password may have at most 1024 characters", param="password")
    return password


def new_password() -> str:
    """A random password for `users create --generate` and resets (about 120 bits)."""
    return secrets.token_urlsafe(15)


def parse_grants(
    *,
    role: str = "user",
    scopes: Iterable[str] = ("chat",),
    models: Iterable[str] = (ANY_MODEL,),
    clearance: str = "public",
    limits: Limits | None = None,
    collections: Iterable[str] = (ANY_COLLECTION,),
) -> Grants:
    """Grants from loose input (CLI, forms), normalised; InvalidRequest names a bad field."""
    clean_scopes = tuple(s for s in SCOPES if s in {x.strip() for x in scopes})
    unknown = sorted({x.strip() for x in scopes if x.strip()} - set(SCOPES))
    if unknown:
        raise InvalidRequest(f"unknown scopes {', '.join(unknown)}; use some of {', '.join(SCOPES)}", param="scopes")
    clean_models = tuple(dict.fromkeys(m.strip() for m in models if m.strip()))
    clean_collections = tuple(dict.fromkeys(c.strip() for c in collections if c.strip()))
    return Grants(role, clean_scopes, clean_models, clearance, limits or Limits(), clean_collections)


def _check_username(username: str) -> str:
    name = username.strip()
    if not 1 <= len(name) <= 64 or not set(name) <= _USERNAME_CHARS:
        raise InvalidRequest(
            "a username has 1 to 64 letters, digits or . _ @ + -", param="username"
        )
    return name


def _check_grants(env: str, grants: Grants) -> None:
    if env not in ENVIRONMENTS:
        raise InvalidRequest(f"unknown environment '{env}'; choose one of {', '.join(ENVIRONMENTS)}", param="env")
    if grants.role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", param="role")
    if not grants.scopes or not set(grants.scopes) <= set(SCOPES):
        raise InvalidRequest(f"scopes must be some of {', '.join(SCOPES)}", param="scopes")
    if not grants.models or any("," in m for m in grants.models):
        raise InvalidRequest("models must be '*' or a list of model ids", param="models")
    if any("," in c or not c for c in grants.collections):  # none at all is allowed: a user without documents
        raise InvalidRequest("collections must be '*' or a list of collection names", param="collections")
    if grants.clearance not in CLEARANCES:
        raise InvalidRequest(f"clearance must be one of {', '.join(CLEARANCES)}", param="clearance")
    for label, value in grants.limits.to_dict().items():
        if value is not None and value < 1:
            raise InvalidRequest(f"{label} must be a positive number", param=label)


def _cap_limits(own: Limits, asked: Limits) -> Limits:
    """A personal key's limits: what was asked, never above (or unlimited past) the user's own."""

    def cap(mine: int | None, wanted: int | None) -> int | None:
        if mine is None:
            return wanted
        return mine if wanted is None else min(mine, wanted)

    return Limits(cap(own.rpm, asked.rpm), cap(own.tpm, asked.tpm), cap(own.daily_tokens, asked.daily_tokens))


def _record(row: sqlite3.Row) -> UserRecord:
    return UserRecord(
        id=row["id"],
        username=row["username"],
        env=row["env"],
        role=row["role"],
        source=row["source"],
        scopes=tuple(s for s in row["scopes"].split(",") if s),
        models=tuple(m for m in row["models"].split(",") if m),
        clearance=row["clearance"],
        limits=Limits(row["rpm"], row["tpm"], row["daily_tokens"]),
        created_at=from_iso(row["created_at"]),
        display_name=row["display_name"],
        subject=row["subject"],
        has_password=row["password_hash"] is not None,
        password_changed_at=_epoch_or_none(row["password_changed_at"]),
        last_login_at=_epoch_or_none(row["last_login_at"]),
        disabled_at=_epoch_or_none(row["disabled_at"]),
        collections=tuple(c for c in row["collections"].split(",") if c),  # empty: none (the column defaults to "*")
    )


def _epoch_or_none(text: str | None) -> float | None:
    return from_iso(text) if text else None


def _iso_or_none(epoch: float | None) -> str | None:
    return to_iso(epoch) if epoch is not None else None
