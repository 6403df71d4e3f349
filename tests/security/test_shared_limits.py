"""rpm/tpm buckets in a real Redis shared by two gateways' quotas (each with its own store), and the fallback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends import RedisServer
from garrison.errors import ConfigError, RateLimited
from garrison.security.principal import Limits, Principal
from garrison.security.quotas import Grant, Quotas
from garrison.security.shared_limits import DEGRADED, SharedLimits, open_limits
from garrison.security.usage import UsageLedger
from garrison.store import Store


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def _quotas(tmp_path: Path, name: str, url: str) -> Quotas:
    store = Store(tmp_path / f"{name}.db")
    return open_limits(url, store, UsageLedger(store), retry_s=0.01)


def _key(**limits: int) -> Principal:
    return Principal("k1", "k1", "dev", frozenset({"chat"}), frozenset({"*"}), limits=Limits(**limits))


def test_two_gateways_on_two_stores_admit_exactly_the_rpm(tmp_path: Path, redis_server: RedisServer) -> None:
    gateways = [_quotas(tmp_path, "a", redis_server.url), _quotas(tmp_path, "b", redis_server.url)]
    key, admitted, refused = _key(rpm=5), [], []
    barrier = threading.Barrier(20)

    def one(i: int) -> None:
        barrier.wait()
        try:
            admitted.append(gateways[i % 2].admit(key, 10, 10))
        except RateLimited as exc:
            refused.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 5 and len(refused) == 15
    assert {g.via for g in admitted} == {"redis"}
    assert {e.code for e in refused} == {"rpm_limit_exceeded"} and all(e.retry_after > 0 for e in refused)


def test_tpm_reservations_are_shared_and_settled(tmp_path: Path, redis_server: RedisServer) -> None:
    a, b = _quotas(tmp_path, "a", redis_server.url), _quotas(tmp_path, "b", redis_server.url)
    key = _key(tpm=100)
    held = a.admit(key, 30, 50)  # 80 of 100 in flight
    with pytest.raises(RateLimited) as refused:
        b.admit(key, 10, 20)  # 30 more do not fit on the other gateway
    assert refused.value.code == "tpm_limit_exceeded"
    a.settle(key, held, "m", 30, 5)  # it used only 35: 45 come back
    assert b.admit(key, 10, 20).reserved == 30
    open_ended = b.admit(key, 5, 0, open_ended=True)  # capped at what the shared bucket holds
    assert open_ended.limit is not None and 5 <= open_ended.limit <= 36


def test_daily_budget_stays_in_the_store(tmp_path: Path, redis_server: RedisServer) -> None:
    quotas = _quotas(tmp_path, "a", redis_server.url)
    key = _key(rpm=100, daily_tokens=50)
    grant = quotas.admit(key, 10, 100)
    assert (grant.reserved, grant.limit, grant.via) == (50, 50, "redis")
    with pytest.raises(RateLimited) as refused:
        quotas.admit(key, 10, 10)
    assert refused.value.code == "daily_budget_exceeded"


def test_redis_stopped_falls_back_to_the_store_and_recovers(tmp_path: Path, redis_server: RedisServer) -> None:
    quotas = _quotas(tmp_path, "a", redis_server.url)
    key = _key(rpm=3)
    assert quotas.admit(key, 1, 1).via == "redis"
    assert quotas.health()["state"] == "ok"
    redis_server.stop()
    fallback = quotas.admit(key, 1, 1)
    assert fallback.via == DEGRADED
    health = quotas.health()
    assert health["state"] == "degraded" and health["fallback"] == "store buckets"
    quotas.settle(key, fallback, "m", 1, 1)  # settles in the store, no error
    for _ in range(2):
        quotas.admit(key, 1, 1)
    with pytest.raises(RateLimited):  # the store's own bucket still limits this gateway
        quotas.admit(key, 1, 1)
    redis_server.start()
    assert quotas.health()["state"] == "ok"
    again = quotas.admit(key, 1, 1)
    assert again.via == "redis"  # shared again (a restarted Redis starts with full buckets)
    quotas.settle(key, Grant("k1", 0, via="redis"), None, 0, 0)


def test_a_bad_limits_url_is_refused_without_echoing_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    with pytest.raises(ConfigError) as exc:
        open_limits("http://user:hunter2@host", store, UsageLedger(store))
    assert "hunter2" not in str(exc.value) and "redis://" in str(exc.value)
    assert type(open_limits(None, store, UsageLedger(store))) is Quotas
    assert isinstance(open_limits("redis://127.0.0.1:9/0", store, UsageLedger(store)), SharedLimits)
