"""The store: SQLite in WAL mode under GARRISON_HOME, numbered migrations, a URL that names the backend."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from garrison.errors import ConfigError, InvalidRequest
from garrison.settings import Settings
from garrison.store import Store, open_store
from garrison.store.migrate import available, statements
from garrison.store.times import parse_duration, parse_expiry, parse_when, seconds_until_next_day, utc_day


def test_migrations_apply_once_in_order(tmp_path: Path) -> None:
    store = Store(tmp_path / "g.db")
    try:
        versions = [
            row[0] for row in store.fetchall("SELECT version FROM schema_migrations ORDER BY version")
        ]
        assert versions == [m.version for m in available()] and versions[0] == 1
        tables = {row[0] for row in store.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"api_keys", "api_key_secrets", "usage_daily", "audit_log"} <= tables
    finally:
        store.close()
    again = Store(tmp_path / "g.db")  # reopening applies nothing twice
    try:
        assert len(again.fetchall("SELECT version FROM schema_migrations")) == len(versions)
    finally:
        again.close()


def test_wal_full_sync_and_private_file(tmp_path: Path) -> None:
    store = Store(tmp_path / "g.db")
    try:
        conn = store.connection()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert stat.S_IMODE((tmp_path / "g.db").stat().st_mode) == 0o600
    finally:
        store.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "g.db")
    store.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, 'future', 'x')")
    store.close()
    with pytest.raises(ConfigError, match="newer than this garrison"):
        Store(tmp_path / "g.db")


def test_failed_transaction_rolls_back(tmp_path: Path) -> None:
    store = Store(tmp_path / "g.db")
    try:
        with pytest.raises(RuntimeError), store.transaction() as conn:
            conn.execute("INSERT INTO usage_daily (key_id, day, model) VALUES ('k', 'd', 'm')")
            raise RuntimeError("boom")
        assert store.fetchall("SELECT * FROM usage_daily") == []
    finally:
        store.close()


def test_threads_write_concurrently_without_losing_rows(tmp_path: Path) -> None:
    store = Store(tmp_path / "g.db")

    def work(n: int) -> None:
        for _ in range(25):
            store.execute(
                "INSERT INTO usage_daily (key_id, day, model, requests) VALUES (?, ?, 'm', 1) "
                "ON CONFLICT (key_id, day, model) DO UPDATE SET requests = usage_daily.requests + 1",
                (f"k{n % 2}", "2025-01-01"),
            )

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        total = store.fetchone("SELECT SUM(requests) FROM usage_daily")
        assert total is not None and total[0] == 100
    finally:
        store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.fetchall("SELECT 1")


def test_database_url_selects_the_backend(tmp_path: Path) -> None:
    default = open_store(Settings(home=tmp_path / "h"))
    assert default.path == tmp_path / "h" / "garrison.db"
    default.close()
    custom = open_store(Settings(home=tmp_path / "h", database_url=f"sqlite:///{tmp_path}/other.db"))
    assert custom.path == tmp_path / "other.db"
    custom.close()
    with pytest.raises(ConfigError, match="cannot connect to the PostgreSQL store") as excinfo:
        open_store(Settings(home=tmp_path, database_url="postgresql://user:hunter2@127.0.0.1:9/garrison"))
    assert "hunter2" not in excinfo.value.message
    with pytest.raises(ConfigError, match="unsupported scheme 'mysql'"):
        open_store(Settings(home=tmp_path, database_url="mysql://db/garrison"))
    with pytest.raises(ConfigError, match="must name a file"):
        open_store(Settings(home=tmp_path, database_url="sqlite:///:memory:"))


def test_statement_splitting_keeps_triggers_whole() -> None:
    sql = (
        "-- comment\nCREATE TABLE t (a INTEGER);\n"
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN\n  UPDATE t SET a = 1;\n  SELECT 1;\nEND;\n"
    )
    parts = statements(sql)
    assert len(parts) == 2 and parts[1].startswith("CREATE TRIGGER") and parts[1].endswith("END;")


def test_time_words() -> None:
    assert (
        parse_duration("10m") == 600
        and parse_duration("30d") == 30 * 86400
        and parse_duration("2w") == 1209600
    )
    assert parse_when("2025-01-31") == 1738281600.0
    assert parse_when("2025-01-31T01:00:00Z") == 1738281600.0 + 3600
    assert parse_expiry("1h", now=100.0) == 3700.0
    assert utc_day(1738281600.0 + 86399) == "2025-01-31"
    assert seconds_until_next_day(1738281600.0 + 86000) == 400
    for bad, call in (("10 minutes", parse_duration), ("tomorrow", parse_when)):
        with pytest.raises(InvalidRequest, match="not a"):
            call(bad)
    with pytest.raises(InvalidRequest, match="not in the future"):
        parse_expiry("2000-01-01", now=1738281600.0)


def test_a_version_one_store_gains_key_collections_and_keeps_its_keys(tmp_path: Path) -> None:
    import sqlite3

    from garrison.security.keys import KeyStore

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL);"
        + available()[0].sql
        + "INSERT INTO schema_migrations VALUES (1, 'initial', '2025-01-01T00:00:00.000000Z');"
        "INSERT INTO api_keys (id, name, env, scopes, models, clearance, created_at) "
        "VALUES ('0123456789ab', 'old', 'dev', 'chat', '*', 'public', '2025-01-01T00:00:00.000000Z');"
    )
    conn.close()
    store = Store(path)  # applies 0002 to a database that has a key already
    try:
        keys = KeyStore(store, b"s" * 32)
        assert keys.get("0123456789ab").collections == ("*",)
        narrow = keys.create(name="eng", env="dev", collections=["eng", "ops"]).record
        assert narrow.principal().allows_collection("eng") and not narrow.principal().allows_collection("hr")
    finally:
        store.close()


def test_two_migrations_with_one_version_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from garrison.store import migrate

    twice = [migrate.Migration(1, "a", "SELECT 1;"), migrate.Migration(1, "b", "SELECT 2;")]
    monkeypatch.setattr(migrate, "available", lambda package="garrison.store": twice)
    with pytest.raises(ConfigError, match="share version 1"):
        Store(tmp_path / "x.db")
