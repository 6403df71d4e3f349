"""Two `garrison serve` processes on loopback sharing one store and one real Redis: one rpm limit, degraded audit.

The engine behind both is a scripted OpenAI upstream (the limits are what is tested, not generation).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from backends import RedisServer, UpstreamThread, chat, start_gateway
from garrison.security import connect
from garrison.security.principal import Limits
from garrison.security.shared_limits import DEGRADED
from garrison.settings import Settings


@dataclass
class Pair:
    home: Path
    urls: list[str]
    redis: RedisServer

    def key(self, name: str, rpm: int) -> str:
        security = connect(Settings(home=self.home))
        try:
            return security.keys.create(name=name, env="dev", limits=Limits(rpm=rpm)).token
        finally:
            security.close()

    def records(self) -> list[dict[str, object]]:
        security = connect(Settings(home=self.home))
        try:
            assert security.audit.verify().ok
            return security.audit.query(limit=None)
        finally:
            security.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    redis_server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    upstream = UpstreamThread().start()
    home = tmp_path_factory.mktemp("shared")
    config = home / "garrison.toml"
    config.write_text(
        f'[limits]\nurl = "{redis_server.url}"\nretry_s = 0.1\n'
        f'[[models]]\nid = "remote"\nengine = "openai"\nupstreams = ["{upstream.server.openai_base}"]\n'
        'upstream_model = "up-model"\n'
    )
    gateways = []
    try:
        for _ in range(2):  # one after the other: the first creates the store and the admin key
            gateways.append(start_gateway(config, home))
        yield Pair(home, [g.ready_url.removesuffix("/health") for g in gateways], redis_server)
    finally:
        for g in gateways:
            g.stop()
        upstream.stop()
        redis_server.stop()




def test_twenty_concurrent_requests_across_two_gateways_admit_at_most_six(pair: Pair) -> None:
    key = pair.key("rpm5", rpm=5)
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda i: chat(pair.urls[i % 2], key), range(20)))
    statuses = [a.status_code for a in answers]
    admitted = statuses.count(200)
    assert 5 <= admitted <= 6, statuses
    assert statuses.count(429) == 20 - admitted
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 429} == {"rpm_limit_exceeded"}
    key_id = key.split("_")[2]
    finished = [r for r in pair.records() if r["key_id"] == key_id and r["event"] == "request.finished"]
    assert len(finished) == admitted  # both gateways' records in one verified chain


def test_redis_stopped_mid_run_requests_continue_audited_as_degraded(pair: Pair) -> None:
    key = pair.key("rpm100", rpm=100)
    assert [chat(u, key).status_code for u in pair.urls] == [200, 200]
    assert all(httpx.get(f"{u}/health").json()["status"] == "ok" for u in pair.urls)
    pair.redis.stop()
    try:
        answers = [chat(pair.urls[i % 2], key) for i in range(4)]
        assert [a.status_code for a in answers] == [200] * 4
        healths = [httpx.get(f"{u}/health").json() for u in pair.urls]
        assert [h["status"] for h in healths] == ["degraded", "degraded"]
        assert healths[0]["backends"]["limits"]["fallback"] == "store buckets"
        key_id = key.split("_")[2]
        mine = [r for r in pair.records() if r["key_id"] == key_id and r["event"] == "request.finished"]
        limits = [json.loads(str(r["details"])).get("limits") for r in mine]
        assert limits == [None, None, DEGRADED, DEGRADED, DEGRADED, DEGRADED]
    finally:
        pair.redis.start()
    assert chat(pair.urls[0], key).status_code == 200
