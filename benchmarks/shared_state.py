"""What sharing state costs per admission, and how many requests N gateways together admit past a limit.

In process, no model: one Quotas object per "gateway", each admitting and settling requests for one key,
against the store's own buckets on SQLite (today's default), the store's buckets on PostgreSQL, and Redis
buckets (`limits.url`). Reports p50/p99 of one admit+settle, and, for rpm=5 with 20 concurrent requests
over 2 gateways repeated `--trials` times, how many were admitted (the limit is 5; the issue allows 6).
Starts its own redis-server and PostgreSQL cluster in a temp dir (tests/backends.py).

    PYTHONPATH=src:tests python benchmarks/shared_state.py [--requests 500] [--trials 20] [--out PATH.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from backends import PostgresCluster, RedisServer  # noqa: E402
from garrison.errors import RateLimited  # noqa: E402
from garrison.security.principal import Limits, Principal  # noqa: E402
from garrison.security.quotas import Quotas  # noqa: E402
from garrison.security.shared_limits import open_limits  # noqa: E402
from garrison.security.usage import UsageLedger  # noqa: E402
from garrison.store import Store  # noqa: E402
from garrison.store.db import Store as SqliteStore  # noqa: E402
from garrison.store.postgres import PostgresStore  # noqa: E402

Factory = Callable[[str], Quotas]


def _key(**limits: int) -> Principal:
    return Principal(uuid.uuid4().hex[:12], "bench", "dev", frozenset({"chat"}), frozenset({"*"}),
                     limits=Limits(**limits))


def latency(make: Factory, requests: int) -> dict[str, float]:
    quotas = make("lat")
    key = _key(rpm=10**9, tpm=10**12, daily_tokens=10**12)
    samples = []
    for _ in range(requests):
        start = time.perf_counter_ns()
        grant = quotas.admit(key, 20, 20)
        quotas.settle(key, grant, "m", 20, 10)
        samples.append((time.perf_counter_ns() - start) / 1e6)
    samples.sort()
    return {"p50_ms": round(statistics.median(samples), 3), "p99_ms": round(samples[int(len(samples) * 0.99)], 3)}


def _trial(gateways: list[Quotas]) -> int:
    key, admitted = _key(rpm=5), []
    barrier = threading.Barrier(20)

    def one(i: int) -> None:
        barrier.wait()
        try:
            gateways[i % 2].admit(key, 10, 10)
            admitted.append(i)
        except RateLimited:
            pass

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(admitted)


def over_admission(make: Factory, trials: int) -> list[int]:
    counts = []
    for trial in range(trials):
        gateways = [make(f"g{trial}a"), make(f"g{trial}b")]
        counts.append(_trial(gateways))
        for quotas in gateways:
            quotas._store.close()  # each thread opened a connection
    return counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "shared_state.json")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="garrison-bench-"))
    (root / "redis").mkdir()
    redis_server: RedisServer | None = RedisServer(root / "redis").start()
    cluster = PostgresCluster(Path(tempfile.mkdtemp(prefix="garrison-bench-pg-")), fsync=True).init()
    pg_url = cluster.database("bench")
    stores: list[Store] = []

    def sqlite_shared(_: str) -> Quotas:  # gateways sharing one SQLite file (one machine)
        store = SqliteStore(root / "shared.db")
        stores.append(store)
        return Quotas(store, UsageLedger(store))

    def sqlite_separate_redis(name: str) -> Quotas:  # gateways with their own stores, limits in Redis
        store = SqliteStore(root / f"{name}.db")
        stores.append(store)
        assert redis_server is not None
        return open_limits(redis_server.url, store, UsageLedger(store))

    def postgres(_: str) -> Quotas:  # gateways sharing one PostgreSQL store, buckets in it
        store = PostgresStore(pg_url)
        stores.append(store)
        return Quotas(store, UsageLedger(store))

    def postgres_redis(_: str) -> Quotas:
        store = PostgresStore(pg_url)
        stores.append(store)
        assert redis_server is not None
        return open_limits(redis_server.url, store, UsageLedger(store))

    backends: dict[str, Factory] = {
        "sqlite store buckets (one file)": sqlite_shared,
        "sqlite per gateway + redis buckets": sqlite_separate_redis,
        "postgresql store buckets": postgres,
        "postgresql + redis buckets": postgres_redis,
    }
    results = {}
    try:
        for name, make in backends.items():
            counts = over_admission(make, args.trials)
            results[name] = {**latency(make, args.requests), "admitted_of_20_at_rpm5": counts,
                             "max_admitted": max(counts)}
            print(name, results[name], flush=True)
    finally:
        for store in stores:
            store.close()
        cluster.stop()
        if redis_server is not None:
            redis_server.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": platform.platform(), "python": platform.python_version(), "requests": args.requests,
        "trials": args.trials, "note": "admit+settle of one request with rpm, tpm and daily limits; "
        "SQLite synchronous=FULL, PostgreSQL fsync on (default)", "results": results,
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
