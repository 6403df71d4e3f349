"""rpm/tpm buckets shared by every gateway through Redis (`limits.url`), checked and charged by Lua scripts.

Each admission runs one script that checks the rpm bucket, the daily budget the store read, and the tpm
bucket, and charges both buckets, atomically in Redis: N gateways together never admit more than a key's
limit. The tokens an admitted request reserves stay charged to its tpm bucket until settlement refunds or
adds the difference (the in-flight reservation). The daily budget's reservations stay in the store, where
they settle in one transaction with the usage rows.

When Redis does not answer, admission falls back to the store's own buckets (today's behaviour without
Redis), the grant says so (`via`), the audit records carry it, and `/health` reports degraded; Redis is
tried again after `limits.retry_s`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from redis.commands.core import Script

from garrison.errors import ConfigError
from garrison.security.principal import Principal
from garrison.security.quotas import Ask, Conn, Grant, Quotas, daily_exceeded, rpm_exceeded, tpm_exceeded
from garrison.security.usage import UsageLedger
from garrison.store import Store
from garrison.store.times import Clock

log = logging.getLogger("garrison.security.limits")

DEGRADED = "store (redis unreachable)"
# A bucket untouched this long is refilled anyway (a minute refills it; debt takes longer): let Redis drop it.
_BUCKET_TTL_S = 3600

_COMMON = """
local now = tonumber(ARGV[1])
local function load(key, cap)
  local v = redis.call('HMGET', key, 'level', 'updated')
  local level, updated = tonumber(v[1]), tonumber(v[2])
  if level == nil then return cap end
  if level > cap then level = cap end
  return math.min(cap, level + math.max(0, now - updated) * cap / 60)
end
local function save(key, level)
  redis.call('HSET', key, 'level', string.format('%.17g', level), 'updated', string.format('%.17g', now))
  redis.call('EXPIRE', key, %(ttl)d)
end
""".replace("%(ttl)d", str(_BUCKET_TTL_S))

# KEYS: rpm bucket, tpm bucket. ARGV: now, rpm (-1: none), tpm (-1: none), ask, least, open_ended, left ('').
# Returns {0, reserved, limit|''} or {1 rpm | 2 tpm | 3 daily, wait seconds}.
_ADMIT = _COMMON + """
local rpm, tpm = tonumber(ARGV[2]), tonumber(ARGV[3])
local ask, least, open_ended = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6] == '1'
local rl, tl
if rpm >= 0 then
  rl = load(KEYS[1], rpm)
  if rl < 1 then return {1, string.format('%.17g', (1 - rl) / (rpm / 60))} end
end
local limit = nil
if ARGV[7] ~= '' then
  limit = tonumber(ARGV[7])
  if limit < least then return {3, '0'} end
end
if tpm >= 0 then
  tl = load(KEYS[2], tpm)
  local need, cap
  if ask == 0 then need, cap = 0, tpm
  elseif open_ended then need = least; cap = math.max(least, math.min(tpm, math.floor(tl)))
  else need = math.min(ask, tpm); cap = tpm end
  if limit then limit = math.min(limit, cap) else limit = cap end
  local n = math.min(math.max(need, 0), tpm)
  if tl < n then return {2, string.format('%.17g', (n - tl) / (tpm / 60))} end
end
local reserved = ask
if limit then reserved = math.min(ask, limit) end
if rl then save(KEYS[1], rl - 1) end
if tl then save(KEYS[2], math.min(tpm, tl - reserved)) end
if limit then return {0, tostring(reserved), tostring(reserved)} end
return {0, tostring(reserved), ''}
"""

# KEYS: tpm bucket. ARGV: now, tpm, amount (negative: a refund). Returns the new level.
_CHARGE = _COMMON + """
local level = math.min(tonumber(ARGV[2]), load(KEYS[1], tonumber(ARGV[2])) - tonumber(ARGV[3]))
save(KEYS[1], level)
return string.format('%.17g', level)
"""

# KEYS: tpm bucket. ARGV: now, tpm, extra. Takes up to `extra` whole tokens the bucket holds; returns them.
_EXTEND = _COMMON + """
local level = load(KEYS[1], tonumber(ARGV[2]))
local take = math.min(tonumber(ARGV[3]), math.max(0, math.floor(level)))
if take > 0 then save(KEYS[1], level - take) end
return take
"""


class SharedLimits(Quotas):
    """Quotas whose rpm/tpm buckets live in Redis; the daily budget and usage stay in the store."""

    def __init__(
        self,
        store: Store,
        usage: UsageLedger,
        client: redis.Redis,
        clock: Clock = time.time,
        *,
        prefix: str = "garrison",
        retry_s: float = 2.0,
    ) -> None:
        super().__init__(store, usage, clock)
        self._redis = client
        self._prefix = prefix
        self._retry_s = retry_s
        self._down_until = 0.0  # monotonic time before which Redis is not tried again
        self._down_reason: str | None = None
        self._lock = threading.Lock()
        self._admit: Script = client.register_script(_ADMIT)
        self._charge: Script = client.register_script(_CHARGE)
        self._extend: Script = client.register_script(_EXTEND)

    def _key(self, key_id: str, kind: str) -> str:
        return f"{self._prefix}:bucket:{key_id}:{kind}"

    def _available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, exc: redis.RedisError) -> None:
        with self._lock:
            first = self._down_reason is None
            self._down_until = time.monotonic() + self._retry_s
            self._down_reason = f"{type(exc).__name__}: {exc}"
        if first:
            log.warning("redis limits unreachable (%s); rpm/tpm fall back to the store's buckets", self._down_reason)

    def _recovered(self) -> None:
        if self._down_reason is not None:
            with self._lock:
                self._down_reason = None
            log.warning("redis limits reachable again; rpm/tpm are shared again")

    def _take(self, conn: Conn, principal: Principal, ask: Ask, now: float) -> tuple[int, int | None, str]:
        if not self._available():
            reserved, limit, _ = super()._take(conn, principal, ask, now)
            return reserved, limit, DEGRADED
        limits, key = principal.limits, principal.key_id
        args: list[str | int | float] = [
            repr(now), -1 if limits.rpm is None else limits.rpm, -1 if limits.tpm is None else limits.tpm,
            ask.tokens, ask.least, int(ask.open_ended), "" if ask.left is None else ask.left,
        ]
        try:
            answer: list[Any] = self._admit(keys=[self._key(key, "rpm"), self._key(key, "tpm")], args=args)
        except redis.RedisError as exc:
            self._failed(exc)
            reserved, limit, _ = super()._take(conn, principal, ask, now)
            return reserved, limit, DEGRADED
        self._recovered()
        code = int(answer[0])
        if code == 1:
            raise rpm_exceeded(limits.rpm, float(answer[1]))
        if code == 2:
            raise tpm_exceeded(limits.tpm, float(answer[1]))
        if code == 3:
            raise daily_exceeded(limits.daily_tokens, ask, now)
        limit_text = answer[2].decode() if isinstance(answer[2], bytes) else str(answer[2])
        return int(answer[1]), (int(limit_text) if limit_text else None), "redis"

    def _charge_tpm(self, conn: Conn, principal: Principal, grant: Grant, amount: int, now: float) -> None:
        if grant.via != "redis":
            super()._charge_tpm(conn, principal, grant, amount, now)
            return
        tpm = principal.limits.tpm
        if tpm is None or not amount:
            return
        try:
            self._charge(keys=[self._key(principal.key_id, "tpm")], args=[repr(now), tpm, amount])
        except redis.RedisError as exc:  # the bucket refills by itself; a lost refund only errs on the safe side
            self._failed(exc)

    def _extend_tpm(self, conn: Conn, principal: Principal, grant: Grant, extra: int, now: float) -> int:
        tpm = principal.limits.tpm
        if grant.via != "redis" or tpm is None:
            return super()._extend_tpm(conn, principal, grant, extra, now)
        try:
            return int(self._extend(keys=[self._key(principal.key_id, "tpm")], args=[repr(now), tpm, extra]))
        except redis.RedisError as exc:
            self._failed(exc)
            return 0

    def health(self) -> dict[str, str]:
        """Pings Redis (at most once per `retry_s` while it is down): ok, or degraded with the reason."""
        if self._available():
            try:
                self._redis.ping()
                self._recovered()
            except redis.RedisError as exc:
                self._failed(exc)
        reason = self._down_reason
        if reason is None:
            return {"backend": "redis", "state": "ok"}
        return {"backend": "redis", "state": "degraded", "fallback": "store buckets", "reason": reason}

    def close(self) -> None:
        self._redis.close()


def open_limits(
    url: str | None, store: Store, usage: UsageLedger, clock: Clock = time.time, *,
    retry_s: float = 2.0, timeout_s: float = 0.25, prefix: str = "garrison",
) -> Quotas:
    """The quotas for `limits.url`: the store's own buckets without one, Redis-shared buckets with one."""
    if not url:
        return Quotas(store, usage, clock)
    scheme = url.split(":", 1)[0].lower()
    if scheme not in ("redis", "rediss", "unix"):
        # The URL itself is not echoed: it may carry a password.
        raise ConfigError(f"limits.url has an unsupported scheme '{scheme}'; use redis://HOST:PORT/DB")
    try:
        client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry_on_timeout=False
        )
    except ValueError as exc:
        raise ConfigError(f"limits.url is not a valid Redis URL ({exc})") from None
    return SharedLimits(store, usage, client, clock, prefix=prefix, retry_s=retry_s)
