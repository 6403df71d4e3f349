"""Console sessions: a random id in a signed cookie, only its digest in the store, idle and absolute expiry.

The cookie is `<session id>.<HMAC of it>` under a key derived from the server secret, so a forged or
altered cookie is refused before the store is read. Sign-out (and disabling a user, or resetting a
password) revokes the row: a stolen cookie stops working at once, whatever its signature.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from garrison.store import Store
from garrison.store.times import Clock, from_iso, to_iso
from garrison.subkeys import derive

_TOUCH_EVERY_S = 30.0  # last_seen_at is written at most this often per session (idle timeout resolution)


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A sub-key of the server secret for one purpose, so session, CSRF and OIDC MACs never share a key."""
    return derive(secret, f"console/{purpose}/v1")


def sign(key: bytes, value: str) -> str:
    """`value.mac` (URL-safe) under `key`."""
    return f"{value}.{hmac.new(key, value.encode(), hashlib.sha256).hexdigest()}"


def unsign(key: bytes, signed: str | None) -> str | None:
    """The value of a `value.mac` string whose MAC is right (constant-time compare), else None."""
    if not signed or "." not in signed:
        return None
    value, _, mac = signed.rpartition(".")
    good = hmac.new(key, value.encode(), hashlib.sha256).hexdigest()
    return value if hmac.compare_digest(good, mac) else None


@dataclass(frozen=True, slots=True)
class Session:
    """A live console session: whose it is, when it began, and the id its CSRF token is bound to."""

    session_id: str
    user_id: str
    created_at: float
    last_seen_at: float
    expires_at: float


class SessionStore:
    """Console sessions in the store (table console_sessions)."""

    def __init__(
        self, store: Store, secret: bytes, *, idle_timeout_s: float, lifetime_s: float, clock: Clock = time.time
    ) -> None:
        self._store = store
        self._cookie_key = derive_key(secret, "session cookie")
        self._digest_key = derive_key(secret, "session digest")
        self.idle_timeout_s = idle_timeout_s
        self.lifetime_s = lifetime_s
        self.clock = clock

    def start(self, user_id: str, client: str | None) -> tuple[Session, str]:
        """Begin a session; returns it and the signed cookie value (shown to nobody else)."""
        now = self.clock()
        session_id = secrets.token_urlsafe(32)
        self._store.execute(
            "INSERT INTO console_sessions (digest, user_id, created_at, last_seen_at, expires_at, client) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (self._digest(session_id), user_id, to_iso(now), to_iso(now), to_iso(now + self.lifetime_s), client),
        )
        return Session(session_id, user_id, now, now, now + self.lifetime_s), sign(self._cookie_key, session_id)

    def resume(self, cookie: str | None) -> Session | None:
        """The live session a cookie names (signature, revocation, idle and absolute expiry checked)."""
        session_id = unsign(self._cookie_key, cookie)
        if session_id is None:
            return None
        digest = self._digest(session_id)
        row = self._store.fetchone("SELECT * FROM console_sessions WHERE digest = ?", (digest,))
        if row is None or row["revoked_at"] is not None:
            return None
        now = self.clock()
        last_seen, expires = from_iso(row["last_seen_at"]), from_iso(row["expires_at"])
        if now >= expires or now - last_seen >= self.idle_timeout_s:
            self.end(session_id)  # expired for good, even if a clock is later set back
            return None
        if now - last_seen >= _TOUCH_EVERY_S:
            self._store.execute("UPDATE console_sessions SET last_seen_at = ? WHERE digest = ?", (to_iso(now), digest))
            last_seen = now
        return Session(session_id, row["user_id"], from_iso(row["created_at"]), last_seen, expires)

    def end(self, session_id: str) -> None:
        """Revoke one session (sign-out)."""
        self._store.execute(
            "UPDATE console_sessions SET revoked_at = ? WHERE digest = ? AND revoked_at IS NULL",
            (to_iso(self.clock()), self._digest(session_id)),
        )

    def end_all(self, user_id: str) -> int:
        """Revoke every session of a user (disabled, password reset); returns how many were live."""
        return end_user_sessions(self._store, user_id, self.clock())

    def _digest(self, session_id: str) -> str:
        return hmac.new(self._digest_key, session_id.encode(), hashlib.sha256).hexdigest()


def end_user_sessions(store: Store, user_id: str, now: float) -> int:
    """Revoke every open session of a user (used by the CLI too, which holds no session key)."""
    return store.execute(
        "UPDATE console_sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
        (to_iso(now), user_id),
    )
