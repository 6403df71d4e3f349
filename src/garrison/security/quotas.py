"""Quotas per key: token buckets for requests and tokens per minute, and a daily token budget."""

from __future__ import annotations

import math
import threading
import time

from garrison.errors import RateLimited
from garrison.security.principal import Principal
from garrison.security.usage import UsageLedger
from garrison.store.times import Clock, seconds_until_next_day, utc_day


class TokenBucket:
    """Holds up to `capacity` units and refills `capacity` per minute; the level may go negative (debt)."""

    __slots__ = ("capacity", "level", "updated")

    def __init__(self, capacity: int, now: float) -> None:
        self.capacity = float(capacity)
        self.level = float(capacity)
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


class Quotas:
    """Admits requests against a key's limits before engine work and settles actual tokens afterwards.

    Buckets live in this process's memory (limits apply per server process); the daily budget is read
    from the usage ledger, so it holds across restarts and processes, plus tokens reserved by requests
    still in flight here.
    """

    def __init__(self, usage: UsageLedger, clock: Clock = time.time) -> None:
        self._usage = usage
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._reserved: dict[str, int] = {}

    def admit(self, principal: Principal, estimated_tokens: int) -> None:
        """Let a request in or raise RateLimited naming the limit; an admitted request reserves its tokens."""
        limits, key = principal.limits, principal.key_id
        estimated = max(0, estimated_tokens)
        now = self._clock()
        used = self._usage.tokens_on(key, utc_day(now)) if limits.daily_tokens else 0
        with self._lock:
            rpm = self._bucket(key, "rpm", limits.rpm, now)
            if rpm is not None and (wait := rpm.wait_for(1)) > 0:
                raise RateLimited(
                    f"key exceeded its requests-per-minute limit ({limits.rpm} rpm); "
                    f"retry in {math.ceil(wait)}s",
                    retry_after=wait,
                    code="rpm_limit_exceeded",
                )
            tpm = self._bucket(key, "tpm", limits.tpm, now)
            if tpm is not None and (wait := tpm.wait_for(estimated)) > 0:
                raise RateLimited(
                    f"key exceeded its tokens-per-minute limit ({limits.tpm} tpm); "
                    f"retry in {math.ceil(wait)}s",
                    retry_after=wait,
                    code="tpm_limit_exceeded",
                )
            if limits.daily_tokens is not None:
                spent = used + self._reserved.get(key, 0)
                if spent >= limits.daily_tokens or spent + estimated > limits.daily_tokens:
                    raise RateLimited(
                        f"key exhausted its daily token budget ({limits.daily_tokens} tokens/day, "
                        f"{spent} used today, this request needs ~{estimated}); it resets at 00:00 UTC",
                        retry_after=seconds_until_next_day(now),
                        code="daily_budget_exceeded",
                    )
            if rpm is not None:
                rpm.charge(1)
            if tpm is not None:
                tpm.charge(estimated)
            if estimated:
                self._reserved[key] = self._reserved.get(key, 0) + estimated

    def settle(
        self,
        principal: Principal,
        model: str | None,
        prompt_tokens: int,
        completion_tokens: int,
        reserved_tokens: int,
    ) -> None:
        """Replace an admitted request's reservation by its actual tokens and record its usage."""
        key, now = principal.key_id, self._clock()
        actual = max(0, prompt_tokens) + max(0, completion_tokens)
        with self._lock:
            tpm = self._bucket(key, "tpm", principal.limits.tpm, now)
            if tpm is not None:
                tpm.charge(actual - reserved_tokens)
            if reserved_tokens:
                left = self._reserved.get(key, 0) - reserved_tokens
                if left > 0:
                    self._reserved[key] = left
                else:
                    self._reserved.pop(key, None)
        if model is not None:
            self._usage.record(key, model, utc_day(now), max(0, prompt_tokens), max(0, completion_tokens))

    def _bucket(self, key: str, kind: str, limit: int | None, now: float) -> TokenBucket | None:
        if limit is None:
            self._buckets.pop((key, kind), None)
            return None
        bucket = self._buckets.get((key, kind))
        if bucket is None:
            bucket = self._buckets[(key, kind)] = TokenBucket(limit, now)
        else:
            bucket.refill(now, limit)
        return bucket
