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

Conn = sqlite3.Connection

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
    via: str = "store"  # where its rpm/tpm buckets live: "store", "redis", or "store (redis unreachable)"


@dataclass(frozen=True, slots=True)
class Ask:
    """What one admission asks of the rpm/tpm buckets, with the daily budget already read from the store."""

    tokens: int  # prompt estimate plus the completion tokens asked for
    least: int  # the fewest tokens the request can run with (its prompt and one token)
    open_ended: bool  # no max_tokens: capped at what the tpm bucket holds
    left: int | None  # tokens left in the daily budget (None: no daily budget)
    spent: int = 0  # tokens used or reserved today (for the refusal message)


def rpm_exceeded(rpm: int | None, wait: float) -> RateLimited:
    return RateLimited(
        f"key exceeded its requests-per-minute limit ({rpm} rpm); retry in {math.ceil(wait)}s",
        retry_after=wait,
        code="rpm_limit_exceeded",
    )


def tpm_exceeded(tpm: int | None, wait: float) -> RateLimited:
    return RateLimited(
        f"key exceeded its tokens-per-minute limit ({tpm} tpm); retry in {math.ceil(wait)}s",
        retry_after=wait,
        code="tpm_limit_exceeded",
    )


def daily_exceeded(daily: int | None, ask: Ask, now: float) -> RateLimited:
    return RateLimited(
        f"key exhausted its daily token budget ({daily} tokens/day, "
        f"{ask.spent} used today, this request needs at least ~{ask.least}); it resets at 00:00 UTC",
        retry_after=seconds_until_next_day(now),
        code="daily_budget_exceeded",
    )


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
        if limits.rpm is None and limits.tpm is None and limits.daily_tokens is None:
            return Grant(key, 0)  # nothing to check or hold: no write transaction
        least = max(1, prompt + (1 if completion else 0))  # the prompt and one token, or one unit of anything
        with self._store.transaction() as conn:
            now = self._clock()
            left: int | None = None
            spent = 0
            if limits.daily_tokens is not None:
                spent = self._spent(conn, key, utc_day(now), now)
                left = limits.daily_tokens - spent
            reserved, limit, via = self._take(conn, principal, Ask(ask, least, open_ended, left, spent), now)
            reservation = None
            if limits.daily_tokens is not None and reserved:
                reservation = uuid.uuid4().hex
                conn.execute(
                    "INSERT INTO quota_reservations (id, key_id, day, tokens, expires_at) VALUES (?, ?, ?, ?, ?)",
                    (reservation, key, utc_day(now), reserved, now + RESERVATION_TTL_S),
                )
        return Grant(key, reserved, limit, reservation, via)

    def _take(self, conn: Conn, principal: Principal, ask: Ask, now: float) -> tuple[int, int | None, str]:
        """Check rpm, the daily budget and tpm in that order, then charge the buckets (in the store's
        transaction); returns the tokens reserved, the request's token limit, and where the buckets live."""
        limits, key = principal.limits, principal.key_id
        rpm, tpm = self._buckets(conn, key, limits.rpm, limits.tpm, now)
        if rpm is not None and (wait := rpm.wait_for(1)) > 0:
            raise rpm_exceeded(limits.rpm, wait)
        limit = ask.left
        if ask.left is not None and ask.left < ask.least:
            raise daily_exceeded(limits.daily_tokens, ask, now)
        capacity = limits.tpm
        if tpm is not None and capacity is not None:
            if not ask.tokens:
                need, cap = 0, capacity
            elif ask.open_ended:
                need, cap = ask.least, max(ask.least, min(capacity, math.floor(tpm.level)))
            else:
                need, cap = min(ask.tokens, capacity), capacity
            limit = min(limit, cap) if limit is not None else cap
            if (wait := tpm.wait_for(need)) > 0:
                raise tpm_exceeded(capacity, wait)
        reserved = min(ask.tokens, limit) if limit is not None else ask.tokens
        limit = reserved if limit is not None else None  # a request never spends past what it holds
        if rpm is not None:
            rpm.charge(1)
        if tpm is not None:
            tpm.charge(reserved)
        self._save(conn, key, ("rpm", rpm), ("tpm", tpm))
        return reserved, limit, "store"

    def settle(
        self, principal: Principal, grant: Grant, model: str | None, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """Replace a grant's reservation by the actual tokens and record its usage (in the caller's
        transaction when one is open, so usage commits with the audit record or not at all)."""
        key = principal.key_id
        prompt, completion = max(0, prompt_tokens), max(0, completion_tokens)
        with self._store.transaction() as conn:
            now = self._clock()
            self._charge_tpm(conn, principal, grant, prompt + completion - grant.reserved, now)
            if grant.reservation_id is not None:
                conn.execute("DELETE FROM quota_reservations WHERE id = ?", (grant.reservation_id,))
            if model is not None:
                self._usage.record(key, model, utc_day(now), prompt, completion)

    def extend(self, principal: Principal, grant: Grant, want: int) -> Grant:
        """Grow a grant toward `want` tokens as far as the key's limits allow now (once the engine has
        counted the prompt an estimate under-counted); the grant's limit follows its reservation."""
        if grant.limit is None or want <= grant.reserved:
            return grant
        limits, key = principal.limits, principal.key_id
        extra = want - grant.reserved
        with self._store.transaction() as conn:
            now = self._clock()
            if limits.daily_tokens is not None:
                day = utc_day(now)
                spent = self._spent(conn, key, day, now)
                extra = min(extra, max(0, limits.daily_tokens - spent))
            extra = self._extend_tpm(conn, principal, grant, extra, now)
            if extra <= 0:
                return grant
            if grant.reservation_id is not None:
                conn.execute(
                    "UPDATE quota_reservations SET tokens = tokens + ? WHERE id = ?", (extra, grant.reservation_id)
                )
        return Grant(key, grant.reserved + extra, grant.reserved + extra, grant.reservation_id, grant.via)

    def release(self, principal: Principal, grant: Grant) -> None:
        """Drop the grant of a request that never ran: its reservation goes, its tpm tokens come back."""
        self.settle(principal, grant, None, 0, 0)

    def _charge_tpm(self, conn: Conn, principal: Principal, grant: Grant, amount: int, now: float) -> None:
        """Charge (or, negative, refund) a settled request's tpm bucket."""
        tpm = self._bucket(conn, principal.key_id, "tpm", principal.limits.tpm, now)
        if tpm is not None:
            tpm.charge(amount)
            self._save(conn, principal.key_id, ("tpm", tpm))

    def _extend_tpm(self, conn: Conn, principal: Principal, grant: Grant, extra: int, now: float) -> int:
        """Take up to `extra` more tokens from the tpm bucket, as many as it holds; returns those taken."""
        tpm = self._bucket(conn, principal.key_id, "tpm", principal.limits.tpm, now)
        if tpm is None:
            return extra
        extra = min(extra, max(0, math.floor(tpm.level)))
        if extra > 0:
            tpm.charge(extra)
            self._save(conn, principal.key_id, ("tpm", tpm))
        return extra

    def health(self) -> dict[str, str]:
        """Where the rpm/tpm buckets live and whether that works (the store's own buckets always do)."""
        return {"backend": "store", "state": "ok"}

    def close(self) -> None:
        """Release what the buckets hold open (nothing for the store's own)."""

    def _spent(self, conn: Conn, key: str, day: str, now: float) -> int:
        """Tokens a key used on `day` plus those reserved by requests running now: one statement."""
        row = conn.execute(
            "SELECT (SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM usage_daily "
            "WHERE key_id = ? AND day = ?) + (SELECT COALESCE(SUM(tokens), 0) FROM quota_reservations "
            "WHERE key_id = ? AND day = ? AND expires_at > ?)",
            (key, day, key, day, now),
        ).fetchone()
        return int(row[0])

    def _buckets(
        self, conn: Conn, key: str, rpm: int | None, tpm: int | None, now: float
    ) -> tuple[TokenBucket | None, TokenBucket | None]:
        """A key's rpm and tpm buckets, brought up to date, in one read; the row of a limit the key no longer
        has is dropped."""
        rows = {row[0]: row for row in conn.execute(
            "SELECT kind, level, updated FROM quota_buckets WHERE key_id = ?", (key,)
        ).fetchall()}
        found: list[TokenBucket | None] = []
        for kind, limit in (("rpm", rpm), ("tpm", tpm)):
            row = rows.get(kind)
            if limit is None:
                if row is not None:
                    conn.execute("DELETE FROM quota_buckets WHERE key_id = ? AND kind = ?", (key, kind))
                found.append(None)
                continue
            found.append(self._refilled(row, limit, now))
        return found[0], found[1]

    def _bucket(self, conn: Conn, key: str, kind: str, limit: int | None, now: float) -> TokenBucket | None:
        if limit is None:
            return None  # a bucket left from an older limit is dropped at the key's next admission
        row = conn.execute(
            "SELECT kind, level, updated FROM quota_buckets WHERE key_id = ? AND kind = ?", (key, kind)
        ).fetchone()
        return self._refilled(row, limit, now)

    @staticmethod
    def _refilled(row: sqlite3.Row | None, limit: int, now: float) -> TokenBucket:
        if row is None:
            return TokenBucket(limit, now)
        bucket = TokenBucket(limit, float(row[2]), float(row[1]))
        bucket.refill(now, limit)
        return bucket

    def _save(self, conn: Conn, key: str, *buckets: tuple[str, TokenBucket | None]) -> None:
        """Write the buckets given (None ones are skipped), in one statement."""
        values = [(kind, bucket) for kind, bucket in buckets if bucket is not None]
        if not values:
            return
        conn.execute(
            "INSERT INTO quota_buckets (key_id, kind, level, updated) VALUES "
            + ", ".join("(?, ?, ?, ?)" for _ in values)
            + " ON CONFLICT (key_id, kind) DO UPDATE SET level = excluded.level, updated = excluded.updated",
            [item for kind, bucket in values for item in (key, kind, bucket.level, bucket.updated)],
        )
