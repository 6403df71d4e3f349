"""Quotas per key: token buckets for requests and tokens per minute, and a daily token budget.

Everything lives in the store and is checked and reserved in one write transaction (BEGIN IMMEDIATE), so
concurrent requests, in this process or any other sharing the store, never together pass a limit: an
admitted request holds its reservation until the transaction that records its usage replaces it.
"""

from __future__ import annotations

import math
import sqlite3
import time
import uuid
from dataclasses import dataclass

from garrison.errors import RateLimited
from garrison.security.principal import Principal
from garrison.security.usage import UsageLedger
from garrison.store import Store
from garrison.store.times import Clock, seconds_until_next_day, utc_day

# A reservation left by a process that died mid-request stops counting after this long.
RESERVATION_TTL_S = 3600.0


class TokenBucket:
    """Holds up to `capacity` units and refills `capacity` per minute; the level may go negative (debt)."""

    __slots__ = ("capacity", "level", "updated")

    def __init__(self, capacity: int, now: float, level: float | None = None) -> None:
        self.capacity = float(capacity)
        self.level = float(capacity) if level is None else level
        self.updated = now

    @property
    def rate(self) -> float:
        """Units refilled per second."""
        return self.capacity / 60.0

    def refill(self, now: float, capacity: int) -> None:
        """Bring the level up to date (and follow a changed limit)."""
        if capacity != self.capacity:
            self.capacity = float(capacity)
            self.level = min(self.level, self.capacity)
        self.level = min(self.capacity, self.level + max(0.0, now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` units are there (0: now); asks beyond capacity wait for a full bucket."""
        need = min(max(amount, 0.0), self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def charge(self, amount: float) -> None:
        """Take `amount` units (a negative amount refunds, never above capacity)."""
        self.level = min(self.capacity, self.level - amount)


@dataclass(frozen=True, slots=True)
class Grant:
    """An admitted request's share of its key's limits.

    `reserved` tokens are held (tpm bucket and daily budget) until `settle`; `limit` is the most tokens,
    prompt and completion together, the request may use (None: no token limit applies).
    """

    key_id: str
    reserved: int
    limit: int | None = None
    reservation_id: str | None = None


class Quotas:
    """Admits requests against a key's limits before engine work and settles actual tokens afterwards."""

    def __init__(self, store: Store, usage: UsageLedger, clock: Clock = time.time) -> None:
        self._store = store
        self._usage = usage
        self._clock = clock

    def admit(
        self, principal: Principal, prompt_tokens: int, completion_tokens: int = 0, *, open_ended: bool = False
    ) -> Grant:
        """Let a request in or raise RateLimited naming the limit.

        The request asks for `prompt_tokens` (an estimate) plus up to `completion_tokens`; the key's
        remaining daily budget caps that ask (`Grant.limit`) and the capped ask is reserved. A request whose
        prompt alone does not fit what is left is refused. Against tpm an explicit ask waits until it fits
        (at most a full bucket); an `open_ended` one (no max_tokens) is capped at what the bucket holds.
        """
        limits, key = principal.limits, principal.key_id
        prompt, completion = max(0, prompt_tokens), max(0, completion_tokens)
        ask = prompt + completion
        least = max(1, prompt + (1 if completion else 0))  # the prompt and one token, or one unit of anything
        with self._store.transaction() as conn:
            now = self._clock()
            limit: int | None = None
            rpm = self._bucket(conn, key, "rpm", limits.rpm, now)
            if rpm is not None and (wait := rpm.wait_for(1)) > 0:
                raise RateLimited(
                    f"key exceeded its requests-per-minute limit ({limits.rpm} rpm); "
                    f"retry in {math.ceil(wait)}s",
                    retry_after=wait,
                    code="rpm_limit_exceeded",
                )
            if limits.daily_tokens is not None:
                day = utc_day(now)
                spent = self._usage.tokens_on(key, day) + self._reserved(conn, key, day, now)
                left = limits.daily_tokens - spent
                if left < least:
                    raise RateLimited(
                        f"key exhausted its daily token budget ({limits.daily_tokens} tokens/day, "
                        f"{spent} used today, this request needs at least ~{least}); it resets at 00:00 UTC",
                        retry_after=seconds_until_next_day(now),
                        code="daily_budget_exceeded",
                    )
                limit = left
            capacity = limits.tpm
            tpm = self._bucket(conn, key, "tpm", capacity, now)
            if tpm is not None and capacity is not None:
                if not ask:
                    need, cap = 0, capacity
                elif open_ended:
                    need, cap = least, max(least, min(capacity, math.floor(tpm.level)))
                else:
                    need, cap = min(ask, capacity), capacity
                limit = min(limit, cap) if limit is not None else cap
                if (wait := tpm.wait_for(need)) > 0:
                    raise RateLimited(
                        f"key exceeded its tokens-per-minute limit ({capacity} tpm); "
                        f"retry in {math.ceil(wait)}s",
                        retry_after=wait,
                        code="tpm_limit_exceeded",
                    )
            reserved = min(ask, limit) if limit is not None else ask
            if rpm is not None:
                rpm.charge(1)
                self._save(conn, key, "rpm", rpm)
            if tpm is not None:
                tpm.charge(reserved)
                self._save(conn, key, "tpm", tpm)
            reservation = None
            if limits.daily_tokens is not None and reserved:
                reservation = uuid.uuid4().hex
                conn.execute(
                    "INSERT INTO quota_reservations (id, key_id, day, tokens, expires_at) VALUES (?, ?, ?, ?, ?)",
                    (reservation, key, utc_day(now), reserved, now + RESERVATION_TTL_S),
                )
        return Grant(key, reserved, limit, reservation)

    def settle(
        self, principal: Principal, grant: Grant, model: str | None, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """Replace a grant's reservation by the actual tokens and record its usage (in the caller's
        transaction when one is open, so usage commits with the audit record or not at all)."""
        key = principal.key_id
        prompt, completion = max(0, prompt_tokens), max(0, completion_tokens)
        with self._store.transaction() as conn:
            now = self._clock()
            tpm = self._bucket(conn, key, "tpm", principal.limits.tpm, now)
            if tpm is not None:
                tpm.charge(prompt + completion - grant.reserved)
                self._save(conn, key, "tpm", tpm)
            if grant.reservation_id is not None:
                conn.execute("DELETE FROM quota_reservations WHERE id = ?", (grant.reservation_id,))
            if model is not None:
                self._usage.record(key, model, utc_day(now), prompt, completion)

    def release(self, principal: Principal, grant: Grant) -> None:
        """Drop the grant of a request that never ran: its reservation goes, its tpm tokens come back."""
        self.settle(principal, grant, None, 0, 0)

    def _reserved(self, conn: sqlite3.Connection, key: str, day: str, now: float) -> int:
        row = conn.execute(
            "SELECT COALESCE(SUM(tokens), 0) FROM quota_reservations WHERE key_id = ? AND day = ? AND expires_at > ?",
            (key, day, now),
        ).fetchone()
        return int(row[0])

    def _bucket(
        self, conn: sqlite3.Connection, key: str, kind: str, limit: int | None, now: float
    ) -> TokenBucket | None:
        if limit is None:
            conn.execute("DELETE FROM quota_buckets WHERE key_id = ? AND kind = ?", (key, kind))
            return None
        row = conn.execute(
            "SELECT level, updated FROM quota_buckets WHERE key_id = ? AND kind = ?", (key, kind)
        ).fetchone()
        if row is None:
            return TokenBucket(limit, now)
        bucket = TokenBucket(limit, float(row["updated"]), float(row["level"]))
        bucket.refill(now, limit)
        return bucket

    def _save(self, conn: sqlite3.Connection, key: str, kind: str, bucket: TokenBucket) -> None:
        conn.execute(
            "INSERT INTO quota_buckets (key_id, kind, level, updated) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (key_id, kind) DO UPDATE SET level = excluded.level, updated = excluded.updated",
            (key, kind, bucket.level, bucket.updated),
        )
