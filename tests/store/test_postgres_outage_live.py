"""PostgreSQL stopped under two live gateways: verified keys keep working, audit records queue on local disk
and join the one chain, in order, once the database is back (`audit verify` intact). Its own cluster, since
it stops it. The engine is a scripted OpenAI upstream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from backends import PostgresCluster, UpstreamThread, chat, start_gateway
from garrison.security import Security, connect
from garrison.security.outage import OFFLINE
from garrison.security.principal import Limits
from garrison.settings import Settings


@dataclass
class Site:
    urls: list[str]
    settings: Settings
    cluster: PostgresCluster
    homes: list[Path]

    def security(self) -> Security:
        return connect(self.settings)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    import tempfile

    cluster = PostgresCluster(Path(tempfile.mkdtemp(prefix="garrison-pg-outage-"))).init()
    url = cluster.database("outage")
    root = tmp_path_factory.mktemp("outage")
    upstream = UpstreamThread().start()
    secret = root / "shared.secret"
    procs: list[Any] = []
    homes = []
    try:
        for name in ("a", "b"):
            home = root / name
            home.mkdir()
            homes.append(home)
            (home / "garrison.toml").write_text(
                f'[store]\nurl = "{url}"\noutage_grace = 600\n[auth]\nsecret_file = "{secret}"\n'
                f'[[models]]\nid = "remote"\nengine = "openai"\nupstreams = ["{upstream.server.openai_base}"]\n'
                'upstream_model = "up-model"\n'
            )
            procs.append(start_gateway(home / "garrison.toml", home))
        settings = Settings(home=root / "cli", store={"url": url}, auth={"secret_file": secret})
        yield Site([p.ready_url.removesuffix("/health") for p in procs], settings, cluster, homes)
    finally:
        for p in procs:
            p.stop()
        upstream.stop()
        cluster.stop()
        import shutil

        shutil.rmtree(cluster.directory, ignore_errors=True)




def test_postgres_stopped_mid_load_keys_work_and_audit_is_queued_then_appended(site: Site) -> None:
    security = site.security()
    try:
        key = security.keys.create(name="busy", env="dev", limits=Limits(rpm=1000))
        budget = security.keys.create(name="budget", env="dev", limits=Limits(daily_tokens=10_000))
        unseen = security.keys.create(name="unseen", env="dev")
    finally:
        security.close()
    for url in site.urls:  # verified against the database by both gateways
        assert chat(url, key.token).status_code == 200
        assert chat(url, budget.token).status_code == 200

    site.cluster.stop()
    try:
        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(lambda i: chat(site.urls[i % 2], key.token), range(10)))
        assert [a.status_code for a in answers] == [200] * 10
        refused = chat(site.urls[0], unseen.token)  # never verified: it cannot be checked now
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "store_unavailable"
        daily = chat(site.urls[1], budget.token)  # verified, but its budget lives in the database
        assert daily.status_code == 503 and "daily token budget" in daily.json()["error"]["message"]
        healths = [httpx.get(f"{u}/health", timeout=30).json() for u in site.urls]
        assert [h["status"] for h in healths] == ["degraded", "degraded"]
        queued = sum(h["backends"]["store"]["queued_audit_records"] for h in healths)
        assert queued >= 22  # 10 admitted + 10 finished + 2 refusals (and the 503 at the door)
        assert all(h["backends"]["store"]["reachable"] is False for h in healths)
    finally:
        site.cluster.start()

    healths = [httpx.get(f"{u}/health", timeout=30).json() for u in site.urls]  # replays each gateway's queue
    assert [h["status"] for h in healths] == ["ok", "ok"], healths
    assert all((home / "audit-spool.jsonl").stat().st_size == 0 for home in site.homes)
    security = site.security()
    try:
        verification = security.audit.verify()
        assert verification.ok, verification
        records = security.audit.query(limit=None)
        mine = [r for r in records if r["key_id"] == key.record.id and r["event"] == "request.finished"]
        offline = [r for r in mine if json.loads(str(r["details"])).get("store") == OFFLINE]
        assert (len(mine), len(offline)) == (12, 10)
        used = sum(r.requests for r in security.usage.rows(key_id=key.record.id))
        assert used == 12  # the usage of requests served during the outage arrived with their records
        assert not security.audit.unfinished()
        assert any(r["key_id"] == unseen.record.id or r["status"] == 503 for r in records)
    finally:
        security.close()
    assert chat(site.urls[0], unseen.token).status_code == 200  # the database answers again
