"""Two `garrison serve` processes with their own homes on one PostgreSQL store (and one Redis): one set of
keys, one budget per key, one verifiable audit chain. The engine is a scripted OpenAI upstream."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from backends import PostgresCluster, RedisServer, UpstreamThread, chat, start_gateway
from garrison.security import Security, connect
from garrison.security.principal import Limits
from garrison.settings import Settings


@dataclass
class Gateways:
    urls: list[str]
    settings: Settings

    def security(self) -> Security:
        return connect(self.settings)


@pytest.fixture(scope="module")
def gateways(postgres: PostgresCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateways]:
    url = postgres.database(f"gw_{uuid.uuid4().hex[:8]}")
    root = tmp_path_factory.mktemp("pg-gateways")
    redis_server = RedisServer(tmp_path_factory.mktemp("pg-redis")).start()
    upstream = UpstreamThread().start()
    secret = root / "shared.secret"
    procs: list[Any] = []
    try:
        for name in ("a", "b"):
            home = root / name
            home.mkdir()
            config = home / "garrison.toml"
            config.write_text(
                f'[store]\nurl = "{url}"\n[auth]\nsecret_file = "{secret}"\n[limits]\nurl = "{redis_server.url}"\n'
                f'[[models]]\nid = "remote"\nengine = "openai"\nupstreams = ["{upstream.server.openai_base}"]\n'
                'upstream_model = "up-model"\n'
            )
            procs.append(start_gateway(config, home))
        settings = Settings(home=root / "cli", store={"url": url}, auth={"secret_file": secret})
        yield Gateways([p.ready_url.removesuffix("/health") for p in procs], settings)
    finally:
        for p in procs:
            p.stop()
        upstream.stop()
        redis_server.stop()




def test_one_key_one_limit_one_chain_across_two_gateways(gateways: Gateways) -> None:
    security = gateways.security()
    try:
        issued = security.keys.create(name="rpm5", env="dev", limits=Limits(rpm=5))
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda i: chat(gateways.urls[i % 2], issued.token), range(20)))
        statuses = [a.status_code for a in answers]
        assert 5 <= statuses.count(200) <= 6 and statuses.count(429) == 20 - statuses.count(200), statuses
        security.keys.revoke(issued.record.id)  # revoked through the shared store: both gateways refuse it
        assert [chat(u, issued.token).status_code for u in gateways.urls] == [401, 401]
        verification = security.audit.verify()
        assert verification.ok, verification
        mine = [r for r in security.audit.query(limit=None) if r["key_id"] == issued.record.id]
        assert sum(r["event"] == "request.finished" for r in mine) == statuses.count(200)
        assert sum(r["decision"] == "deny" for r in mine) >= 15
    finally:
        security.close()


def test_a_daily_budget_is_one_budget_across_gateways(gateways: Gateways) -> None:
    security = gateways.security()
    try:
        issued = security.keys.create(name="daily", env="dev", limits=Limits(daily_tokens=60))
        spent = []
        for i in range(8):
            answer = chat(gateways.urls[i % 2], issued.token)
            if answer.status_code == 429:
                assert answer.json()["error"]["code"] == "daily_budget_exceeded"
                break
            assert answer.status_code == 200
            spent.append(answer.json()["usage"]["total_tokens"])
        day = security.usage.rows(key_id=issued.record.id)
        assert sum(r.prompt_tokens + r.completion_tokens for r in day) == sum(spent) <= 60
        assert len(spent) < 8  # the budget ran out although requests alternated between gateways
    finally:
        security.close()


def test_a_key_check_waiting_on_the_database_does_not_stall_the_gateway(gateways: Gateways) -> None:
    """The key check runs off the event loop on a shared store: while one request's check waits on the
    database (here a lock held on the keys table; in production a slow link or an unreachable server's
    connect timeout), the gateway keeps answering others."""
    import time

    import httpx
    import psycopg

    security = gateways.security()
    try:
        issued = security.keys.create(name="waits", env="dev")
    finally:
        security.close()
    url = gateways.urls[0]
    waiting_on_keys = (
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
        "WHERE c.relname = 'api_keys' AND NOT l.granted"
    )
    with psycopg.connect(str(gateways.settings.store.url), autocommit=True) as locker, ThreadPoolExecutor(1) as pool:
        locker.execute("BEGIN")
        locker.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        try:
            pending = pool.submit(chat, url, issued.token)
            deadline = time.monotonic() + 60
            while locker.execute(waiting_on_keys).fetchone()[0] == 0:  # type: ignore[index]
                assert time.monotonic() < deadline and not pending.done(), "the key check never reached the lock"
                time.sleep(0.02)
            health = httpx.get(f"{url}/health", timeout=20)  # a blocked event loop would not answer this
            assert health.status_code == 200 and not pending.done()
        finally:
            locker.execute("COMMIT")
        assert pending.result(timeout=60).status_code == 200
