"""Degraded mode while a shared (PostgreSQL) store is unreachable: bounded, and honest about it.

- Keys verified against the store in the last `store.outage_grace` seconds keep working from a bounded
  in-memory cache (LRU of HMAC digests, never secrets); any other key is answered 503.
- rpm/tpm keep being enforced: in Redis when `limits.url` is set and answers, else in per-process memory
  buckets. A key with a daily budget is answered 503: its budget lives in the store.
- Audit records (with the usage of finished requests) queue durably on local disk and are appended to
  the chain, in order, when the store answers again (audit/spool.py).
"""

from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict
from typing import Any

from garrison.errors import StoreUnavailable
from garrison.security.keys import Match
from garrison.security.principal import Principal
from garrison.security.quotas import Ask, Grant, Quotas
from garrison.store.times import Clock

OFFLINE = "unreachable: key from cache, record queued on local disk"


class KeyCache:
    """The last successful verification of up to `capacity` keys, by digest; entries older than `grace` s
    are not served."""

    def __init__(self, capacity: int, grace: float, clock: Clock) -> None:
        self.capacity, self.grace, self._clock = capacity, grace, clock
        self._entries: OrderedDict[str, tuple[Match, float]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, digest: str, match: Match) -> None:
        with self._lock:
            self._entries[digest] = (match, self._clock())
            self._entries.move_to_end(digest)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def drop(self, digest: str) -> None:
        with self._lock:
            self._entries.pop(digest, None)

    def get(self, digest: str) -> Match:
        """The cached match of a digest verified within the grace, else StoreUnavailable."""
        with self._lock:
            entry = self._entries.get(digest)
        if entry is None or self._clock() - entry[1] > self.grace:
            raise StoreUnavailable(
                f"the key store is unreachable and this key was not verified in the last {self.grace:.0f}s; "
                "retry when the store is back"
            )
        return entry[0]

    def __len__(self) -> int:
        return len(self._entries)


class OfflineQuotas:
    """rpm/tpm for admissions while the store is down: through Redis when it answers, else in a private
    in-memory SQLite database of buckets (per process; as many rows as keys seen)."""

    def __init__(self, quotas: Quotas, clock: Clock) -> None:
        self._quotas = quotas
        self._clock = clock
        self._lock = threading.Lock()
        self._mem = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self._mem.row_factory = sqlite3.Row
        self._mem.execute(
            "CREATE TABLE quota_buckets (key_id TEXT NOT NULL, kind TEXT NOT NULL, level REAL NOT NULL, "
            "updated REAL NOT NULL, PRIMARY KEY (key_id, kind))"
        )

    def admit(self, principal: Principal, prompt_tokens: int, completion_tokens: int, *, open_ended: bool) -> Grant:
        limits = principal.limits
        if limits.daily_tokens is not None:
            raise StoreUnavailable(
                f"API key '{principal.key_id}' has a daily token budget, which cannot be checked while the store "
                "is unreachable; retry when it is back"
            )
        if limits.rpm is None and limits.tpm is None:
            return Grant(principal.key_id, 0, via="memory")
        prompt, completion = max(0, prompt_tokens), max(0, completion_tokens)
        ask = Ask(prompt + completion, max(1, prompt + (1 if completion else 0)), open_ended, None)
        with self._lock:
            reserved, limit, via = self._quotas._take(self._mem, principal, ask, self._clock())
        return Grant(principal.key_id, reserved, limit, None, via if via == "redis" else "memory")

    def settle(self, principal: Principal, grant: Grant, prompt_tokens: int, completion_tokens: int) -> None:
        amount = max(0, prompt_tokens) + max(0, completion_tokens) - grant.reserved
        with self._lock:
            self._quotas._charge_tpm(self._mem, principal, grant, amount, self._clock())

    def close(self) -> None:
        """Free the in-memory buckets (with the security services, at shutdown)."""
        with self._lock:
            self._mem.close()


def health(store_ok: bool, queued: int, cached_keys: int) -> dict[str, Any]:
    """The store's entry in /health."""
    state = "ok" if store_ok and not queued else "degraded"
    out: dict[str, Any] = {"backend": "postgresql", "state": state}
    if state != "ok":
        out.update(reachable=store_ok, queued_audit_records=queued, cached_keys=cached_keys)
    return out
