"""API keys: issue a secret once, store only its HMAC-SHA256, verify in constant time, revoke and rotate."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import string
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from garrison.errors import ConfigError, InvalidRequest, NotFound
from garrison.security.principal import (
    ANY_COLLECTION,
    ANY_MODEL,
    CLEARANCES,
    DEFAULT_SCOPES,
    ENVIRONMENTS,
    SCOPES,
    Limits,
    Principal,
)
from garrison.store import Store
from garrison.store.times import Clock, from_iso, to_iso
from garrison.subkeys import KEY_DIGESTS, derive

if TYPE_CHECKING:
    from garrison.security.outage import KeyCache

TOKEN_PREFIX = "gsk"
_ALPHABET = string.ascii_letters + string.digits
_SECRET_LENGTH = 40  # ~238 bits from a 62-letter alphabet
_POLICY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TOKEN = re.compile(r"^gsk_(dev|staging|prod)_([0-9a-f]{12})_([0-9A-Za-z]{40})$")


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """The public parts of a well-formed key: the environment its prefix names and its key id."""

    env: str
    key_id: str


def parse_token(token: str) -> ParsedToken | None:
    """Split `gsk_<env>_<id>_<secret>`; None when the text is not shaped like a garrison key."""
    match = _TOKEN.match(token)
    return ParsedToken(match[1], match[2]) if match else None


def write_private_file(path: Path, text: str) -> None:
    """Write `text` to `path` atomically with mode 0600 (the admin key, the server secret)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_server_secret(path: Path) -> bytes:
    """The server's HMAC key (32 random bytes, hex, in a 0600 file), created on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_hex(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # atomic create-if-absent: a concurrent first start keeps one secret
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(
            f"the server secret {path} is readable by others (mode {mode:o}); run: chmod 600 {path}"
        )
    try:
        secret = bytes.fromhex(path.read_text(encoding="utf-8").strip())
    except ValueError:
        raise ConfigError(f"the server secret {path} is not hex text") from None
    if len(secret) < 32:
        raise ConfigError(f"the server secret {path} is shorter than 32 bytes")
    return secret


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What the store knows about a key (never its secret)."""

    id: str
    name: str
    env: str
    scopes: tuple[str, ...]
    models: tuple[str, ...]
    clearance: str
    limits: Limits
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    rotated_at: float | None = None
    collections: tuple[str, ...] = (ANY_COLLECTION,)
    policy: str | None = None

    def status(self, now: float) -> str:
        """active, revoked or expired."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def principal(self) -> Principal:
        return Principal(
            key_id=self.id,
            name=self.name,
            env=self.env,
            scopes=frozenset(self.scopes),
            models=frozenset(self.models),
            clearance=self.clearance,
            limits=self.limits,
            collections=frozenset(self.collections),
            policy=self.policy,
        )

    def to_dict(self, now: float) -> dict[str, Any]:
        """JSON view for `keys list --json` and the admin API; it carries no secret."""
        return {
            "id": self.id,
            "name": self.name,
            "env": self.env,
            "prefix": f"{TOKEN_PREFIX}_{self.env}_{self.id}_",
            "scopes": list(self.scopes),
            "models": list(self.models),
            "clearance": self.clearance,
            "collections": list(self.collections),
            "policy": self.policy,
            **self.limits.to_dict(),
            "status": self.status(now),
            "created_at": to_iso(self.created_at),
            "expires_at": _iso_or_none(self.expires_at),
            "revoked_at": _iso_or_none(self.revoked_at),
            "rotated_at": _iso_or_none(self.rotated_at),
        }


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key together with its secret, returned once at creation or rotation and never again."""

    record: KeyRecord
    token: str

    def to_dict(self, now: float) -> dict[str, Any]:
        return {**self.record.to_dict(now), "key": self.token}


@dataclass(frozen=True, slots=True)
class Match:
    """A presented token that matched a stored secret digest, and when that secret stops working."""

    record: KeyRecord
    secret_expires_at: float | None


class KeyStore:
    """API keys in the store; secrets are kept only as HMAC-SHA256 under the server secret."""

    def __init__(self, store: Store, server_secret: bytes, clock: Clock = time.time) -> None:
        self._store = store
        self._secret = derive(server_secret, KEY_DIGESTS)
        self._legacy = server_secret  # digests written before sub-keys; upgraded when next presented
        self._clock = clock
        self.cache: KeyCache | None = None  # set on a shared store: verified keys outlive its outage

    def digest(self, token: str) -> str:
        """The keyed hash stored for a secret (under the key-digest sub-key of the server secret)."""
        return hmac.new(self._secret, token.encode("utf-8"), hashlib.sha256).hexdigest()

    def _legacy_digest(self, token: str) -> str:
        return hmac.new(self._legacy, token.encode("utf-8"), hashlib.sha256).hexdigest()

    def create(
        self,
        *,
        name: str,
        env: str,
        scopes: Sequence[str] = DEFAULT_SCOPES,
        models: Sequence[str] = (ANY_MODEL,),
        clearance: str = "public",
        limits: Limits | None = None,
        expires_at: float | None = None,
        collections: Sequence[str] = (ANY_COLLECTION,),
        policy: str | None = None,
    ) -> IssuedKey:
        """Create a key and return it with its secret (shown once); `policy` names its guardrail policy."""
        if policy is not None and not _POLICY_NAME.match(policy):
            raise InvalidRequest("a policy name is 1 to 64 letters, digits, '.', '_' or '-'", param="policy")
        with self._store.transaction() as conn:
            return self._insert(
                conn, name, env, scopes, models, clearance, limits or Limits(), expires_at, collections, policy
            )

    def bootstrap_admin(self, env: str) -> IssuedKey | None:
        """Create the first admin key of `env` if the environment has no key at all (atomically)."""
        with self._store.transaction() as conn:
            if conn.execute("SELECT 1 FROM api_keys WHERE env = ? LIMIT 1", (env,)).fetchone():
                return None
            return self._insert(conn, "admin", env, SCOPES, (ANY_MODEL,), CLEARANCES[-1], Limits(), None)

    def get(self, key_id: str, env: str | None = None) -> KeyRecord:
        """One key by id (404 when unknown, or when `env` is given and the key belongs to another)."""
        row = self._store.fetchone("SELECT * FROM api_keys WHERE id = ?", (key_id,))
        return _found(row, key_id, env)

    def all(self, env: str | None = None) -> list[KeyRecord]:
        """Every key (of `env` when given), newest first, revoked and expired ones included."""
        where, params = (" WHERE env = ?", (env,)) if env is not None else ("", ())
        rows = self._store.fetchall(f"SELECT * FROM api_keys{where} ORDER BY created_at DESC, id", params)
        return [_record(r) for r in rows]

    def revoke(self, key_id: str, env: str | None = None) -> KeyRecord:
        """Revoke a key now; it stays listed (and audited) but no secret of it works any more."""
        self.get(key_id, env)
        self._store.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (to_iso(self._clock()), key_id),
        )
        return self.get(key_id)

    def rotate(self, key_id: str, grace_seconds: float = 0.0, env: str | None = None) -> IssuedKey:
        """Give a key a new secret; the old one keeps working for `grace_seconds` (0: stops now)."""
        now = self._clock()
        with self._store.transaction() as conn:
            record = _found(conn.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone(), key_id, env)
            if record.status(now) != "active":
                raise InvalidRequest(
                    f"API key '{key_id}' is {record.status(now)}; only active keys can be rotated"
                )
            conn.execute(
                "DELETE FROM api_key_secrets WHERE key_id = ? AND expires_at IS NOT NULL AND expires_at <= ?",
                (key_id, to_iso(now)),
            )
            grace_end = to_iso(now + max(0.0, grace_seconds))
            conn.execute(
                "UPDATE api_key_secrets SET expires_at = ? "
                "WHERE key_id = ? AND (expires_at IS NULL OR expires_at > ?)",
                (grace_end, key_id, grace_end),
            )
            token = self._new_token(record.env, key_id)
            conn.execute(
                "INSERT INTO api_key_secrets (digest, key_id, created_at) VALUES (?, ?, ?)",
                (self.digest(token), key_id, to_iso(now)),
            )
            conn.execute("UPDATE api_keys SET rotated_at = ? WHERE id = ?", (to_iso(now), key_id))
            updated = _record(conn.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone())
        return IssuedKey(updated, token)

    def match(self, token: str, key_id: str) -> Match | None:
        """The key whose stored digest equals the token's, compared in constant time; None when none does."""
        digest, legacy = self.digest(token), self._legacy_digest(token)
        try:
            rows = self._store.fetchall(
                "SELECT k.*, s.digest AS secret_digest, s.expires_at AS secret_expires_at "
                "FROM api_keys k JOIN api_key_secrets s ON s.key_id = k.id WHERE k.id = ?",
                (key_id,),
            )
        except self._store.errors as exc:  # a shared store's outage: keys verified lately still work
            if self.cache is None or not self._store.is_outage(exc):
                raise
            return self.cache.get(digest)
        found, old = None, False
        for row in rows:  # every row is compared both ways, so timing does not depend on which one matches
            current = hmac.compare_digest(row["secret_digest"], digest)
            before = hmac.compare_digest(row["secret_digest"], legacy)
            if current or before:
                found, old = row, before
        if found is None:
            if self.cache is not None:
                self.cache.drop(digest)
            return None
        if old:  # a digest from before sub-keys: store it under the key-digest sub-key from now on
            self._store.execute("UPDATE api_key_secrets SET digest = ? WHERE digest = ?", (digest, legacy))
        match = Match(_record(found), _epoch_or_none(found["secret_expires_at"]))
        if self.cache is not None:
            self.cache.put(digest, match)
        return match

    def _insert(
        self,
        conn: sqlite3.Connection,
        name: str,
        env: str,
        scopes: Sequence[str],
        models: Sequence[str],
        clearance: str,
        limits: Limits,
        expires_at: float | None,
        collections: Sequence[str] = (ANY_COLLECTION,),
        policy: str | None = None,
    ) -> IssuedKey:
        scopes, models = _check(name, env, scopes, models, clearance, limits)
        clean_collections = tuple(dict.fromkeys(c.strip() for c in collections if c.strip()))
        if not clean_collections or any("," in c for c in clean_collections):
            raise InvalidRequest("collections must be '*' or a list of collection names", param="collections")
        now = self._clock()
        key_id = secrets.token_hex(6)
        conn.execute(
            "INSERT INTO api_keys (id, name, env, scopes, models, clearance, rpm, tpm, daily_tokens, "
            "created_at, expires_at, collections, policy) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key_id,
                name.strip(),
                env,
                ",".join(scopes),
                ",".join(models),
                clearance,
                limits.rpm,
                limits.tpm,
                limits.daily_tokens,
                to_iso(now),
                _iso_or_none(expires_at),
                ",".join(clean_collections),
                policy,
            ),
        )
        token = self._new_token(env, key_id)
        conn.execute(
            "INSERT INTO api_key_secrets (digest, key_id, created_at) VALUES (?, ?, ?)",
            (self.digest(token), key_id, to_iso(now)),
        )
        return IssuedKey(
            _record(conn.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()), token
        )

    @staticmethod
    def _new_token(env: str, key_id: str) -> str:
        secret = "".join(secrets.choice(_ALPHABET) for _ in range(_SECRET_LENGTH))
        return f"{TOKEN_PREFIX}_{env}_{key_id}_{secret}"


def _check(
    name: str,
    env: str,
    scopes: Sequence[str],
    models: Sequence[str],
    clearance: str,
    limits: Limits,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Validate a new key's fields; returns scopes and models normalised (ordered, deduplicated)."""
    if not name.strip() or len(name) > 100:
        raise InvalidRequest("a key needs a name of 1 to 100 characters", param="name")
    if env not in ENVIRONMENTS:
        raise InvalidRequest(
            f"unknown environment '{env}'; choose one of {', '.join(ENVIRONMENTS)}", param="env"
        )
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise InvalidRequest(
            f"scopes must be some of {', '.join(SCOPES)} (got {', '.join(unknown) or 'none'})", param="scopes"
        )
    clean_models = tuple(dict.fromkeys(m.strip() for m in models if m.strip()))
    if not clean_models or any("," in m for m in clean_models):
        raise InvalidRequest("models must be '*' or a list of model ids", param="models")
    if clearance not in CLEARANCES:
        raise InvalidRequest(f"clearance must be one of {', '.join(CLEARANCES)}", param="clearance")
    for label, value in limits.to_dict().items():
        if value is not None and value < 1:
            raise InvalidRequest(f"{label} must be a positive number", param=label)
    return tuple(s for s in SCOPES if s in scopes), clean_models


def _found(row: sqlite3.Row | None, key_id: str, env: str | None) -> KeyRecord:
    """The key of a looked-up row; NotFound when there is none, or it lies outside `env` (when given)."""
    if row is None or (env is not None and row["env"] != env):
        where = f" in the '{env}' environment" if env is not None else ""
        raise NotFound(f"no API key with id '{key_id}'{where}", param="id")
    return _record(row)


def _record(row: sqlite3.Row) -> KeyRecord:
    return KeyRecord(
        id=row["id"],
        name=row["name"],
        env=row["env"],
        scopes=tuple(row["scopes"].split(",")),
        models=tuple(row["models"].split(",")),
        clearance=row["clearance"],
        limits=Limits(row["rpm"], row["tpm"], row["daily_tokens"]),
        created_at=from_iso(row["created_at"]),
        expires_at=_epoch_or_none(row["expires_at"]),
        revoked_at=_epoch_or_none(row["revoked_at"]),
        rotated_at=_epoch_or_none(row["rotated_at"]),
        collections=tuple(row["collections"].split(",")),
        policy=row["policy"],
    )


def _epoch_or_none(text: str | None) -> float | None:
    return from_iso(text) if text else None


def _iso_or_none(epoch: float | None) -> str | None:
    return to_iso(epoch) if epoch is not None else None
