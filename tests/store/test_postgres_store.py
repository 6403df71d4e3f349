"""The store on a real PostgreSQL cluster: migrations, keys, quotas, usage and one audit chain under concurrency."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from backends import PostgresCluster
from garrison.audit.log import AuditEvent
from garrison.errors import RateLimited
from garrison.security import Security, connect
from garrison.security.principal import Limits
from garrison.settings import Settings
from garrison.store import open_store
from garrison.store.migrate import applied_versions, available, migrate
from garrison.store.postgres import PgConnection, PostgresStore, translate


def _gateway(tmp_path: Path, name: str, url: str) -> Security:
    """One gateway's security on the shared database, with a secret shared by every gateway."""
    home = tmp_path / name
    secret = tmp_path / "shared.secret"
    return connect(Settings(home=home, store={"url": url}, auth={"secret_file": secret}))


@pytest.fixture
def url(postgres: PostgresCluster) -> str:
    return postgres.database(f"t_{uuid.uuid4().hex[:12]}")


def test_translation_of_placeholders_and_percent() -> None:
    assert translate("SELECT 'a%' WHERE x = ? AND y = ?") == "SELECT 'a%%' WHERE x = %s AND y = %s"


def test_migrations_apply_once_and_columns_are_double_precision(url: str) -> None:
    store = open_store(Settings(store={"url": url}))
    assert isinstance(store, PostgresStore)
    assert applied_versions(store) == {m.version for m in available()}
    assert migrate(store) == []  # a second gateway starting finds nothing to do
    kind = store.fetchone(
        "SELECT data_type FROM information_schema.columns WHERE table_name = ? AND column_name = ?",
        ("quota_buckets", "updated"),
    )
    assert kind is not None and kind[0] == "double precision"
    store.close()


def test_database_url_alias_still_selects_postgres(url: str) -> None:
    store = open_store(Settings(database_url=url))
    assert store.dialect == "postgresql"
    store.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)", (999, "x", "t"))
    with pytest.raises(sqlite3.IntegrityError):  # the sqlite3 surface callers catch (duplicate names)
        store.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)", (999, "x", "t"))
    store.close()


def test_two_gateways_share_keys_quotas_and_usage(tmp_path: Path, url: str) -> None:
    a, b = _gateway(tmp_path, "a", url), _gateway(tmp_path, "b", url)
    try:
        issued = a.keys.create(name="shared", env="dev", limits=Limits(rpm=5, daily_tokens=1000))
        principal = b.guard.authenticate(f"Bearer {issued.token}")  # made on a, verified on b
        assert principal.key_id == issued.record.id
        admitted, refused = [], []
        barrier = threading.Barrier(20)

        def one(i: int) -> None:
            gateway = (a, b)[i % 2]
            barrier.wait()
            try:
                admitted.append((gateway, gateway.guard.admit(principal, 10, 10)))
            except RateLimited as exc:
                refused.append(exc.code)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(admitted) == 5 and refused == ["rpm_limit_exceeded"] * 15
        for gateway, grant in admitted:
            gateway.guard.record_usage(principal, "m", 10, 3, grant=grant)
        assert a.usage.tokens_on(principal.key_id, a.usage.rows()[0].day) == 65
        assert b.store.fetchone("SELECT COUNT(*) FROM quota_reservations")[0] == 0  # type: ignore[index]
    finally:
        a.close()
        b.close()


def test_concurrent_appends_from_two_gateways_make_one_verifiable_chain(tmp_path: Path, url: str) -> None:
    a, b = _gateway(tmp_path, "a", url), _gateway(tmp_path, "b", url)
    try:
        def many(security: Security, tag: str) -> None:
            for i in range(25):
                security.audit.append(AuditEvent(request_id=f"{tag}-{i}", method="POST", route="/v1/x", status=200))

        threads = [threading.Thread(target=many, args=(s, t)) for s in (a, b) for t in ("x", "y")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        verification = a.audit.verify()
        assert verification.ok and a.audit.count() == 100
        seqs = [r["seq"] for r in b.audit.query(limit=None)]
        assert seqs == list(range(1, 101))
        b.store.execute("UPDATE audit_log SET status = 500 WHERE seq = 40")  # tampering is still caught
        assert not a.audit.verify().ok
    finally:
        a.close()
        b.close()


def test_answer_durability_commits_admissions_without_waiting_for_the_wal_flush(
    tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "shared.secret"
    security = connect(Settings(home=tmp_path / "g", store={"url": url}, auth={"secret_file": secret},
                                audit={"durability": "answer"}))
    other = _gateway(tmp_path, "other", url)
    sent: list[str] = []
    real = PgConnection.execute

    def spy(self: PgConnection, sql: str, params: Any = ()) -> Any:
        sent.append(sql)
        return real(self, sql, params)

    monkeypatch.setattr(PgConnection, "execute", spy)
    try:
        with security.audit.transaction(durable=False):  # an admission
            security.audit.append(AuditEvent(request_id="r1", method="POST", route="/v1/x", status=102))
        assert sent[-2:] == ["SET LOCAL synchronous_commit TO OFF", "COMMIT"]
        assert other.audit.count() == 1  # committed all the same
        sent.clear()
        security.audit.append(AuditEvent(request_id="r1", method="POST", route="/v1/x", status=200))  # its end
        assert sent[-1] == "COMMIT" and "SET LOCAL synchronous_commit TO OFF" not in sent
        assert other.audit.verify().ok and other.audit.count() == 2
    finally:
        security.close()
        other.close()


def test_a_peer_token_one_central_gateway_took_is_refused_by_another(url: str, tmp_path: Path) -> None:
    """Two central gateways on one database: a forwarded request's token is taken once, whichever gateway
    sees it first; replayed to the other it is refused (peer_token_replayed), and expired ids are pruned."""
    from garrison.errors import Unauthenticated
    from garrison.security.federation import StoreSeenTokens, TokenSigner, TokenVerifier, TrustedPeer
    from garrison.security.principal import Principal

    signer = TokenSigner.generate("ws-1")
    peer = TrustedPeer.from_pem("ws-1", signer.public_pem(), "confidential")
    stores = [open_store(Settings(home=tmp_path / name, store={"url": url})) for name in ("a", "b")]
    try:
        first, second = (TokenVerifier("hq", [peer], shared=StoreSeenTokens(s, prune_every=2)) for s in stores)
        user = Principal(key_id="k1", name="dana", env="dev", scopes=frozenset({"chat"}), models=frozenset({"*"}),
                         clearance="internal")
        token = signer.mint(user, audience="hq", request_id="r1")
        assert first.verify(token).key_id == "k1"
        with pytest.raises(Unauthenticated) as replayed:
            second.verify(token)
        assert replayed.value.code == "peer_token_replayed"
        fresh = signer.mint(user, audience="hq", request_id="r2")
        assert second.verify(fresh).request_id == "r2"  # a new token is taken by either
        rows = stores[0].fetchall("SELECT id FROM federation_tokens")
        assert len(rows) == 2 and all(str(r["id"]).startswith("ws-1:") for r in rows)
        stores[0].execute("UPDATE federation_tokens SET expires_at = 0")
        StoreSeenTokens(stores[0], prune_every=1).first_use("ws-1:probe", 9e9)  # its insert prunes the expired
        assert [r["id"] for r in stores[0].fetchall("SELECT id FROM federation_tokens")] == ["ws-1:probe"]
    finally:
        for store in stores:
            store.close()
