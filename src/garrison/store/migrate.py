"""Numbered SQL migrations (PACKAGE/migrations/NNNN_name.sql), applied once each, in order, atomically.

Each database has its own package of migrations: the store's (`garrison.store`), the documents index's.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from garrison.errors import ConfigError
from garrison.store.times import to_iso

if TYPE_CHECKING:
    from garrison.store.db import Store

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: its number, name and SQL text."""

    version: int
    name: str
    sql: str


def available(package: str = "garrison.store") -> list[Migration]:
    """Every migration shipped in `package`, by ascending version."""
    found = []
    for entry in resources.files(package).joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def statements(sql: str) -> list[str]:
    """Split a script into complete statements (SQLite's own notion of complete, so triggers survive)."""
    out, buf = [], ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            text = "\n".join(ln for ln in buf.splitlines() if not ln.strip().startswith("--")).strip()
            if text:
                out.append(text)
            buf = ""
    if buf.strip() and not all(ln.strip().startswith("--") for ln in buf.strip().splitlines()):
        raise ConfigError("a migration ends with an incomplete SQL statement")
    return out


def applied_versions(store: Store) -> set[int]:
    """Versions already applied to this database."""
    return {row[0] for row in store.fetchall("SELECT version FROM schema_migrations")}


def migrate(store: Store, package: str = "garrison.store") -> list[int]:
    """Apply `package`'s pending migrations, each in its own transaction; returns the versions applied now."""
    with store.transaction() as conn:  # under the write lock: gateways starting together create it once
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
    known = available(package)
    versions = [m.version for m in known]
    if len(set(versions)) != len(versions):
        twice = sorted({v for v in versions if versions.count(v) > 1})
        raise ConfigError(f"two migrations of {package} share version {twice[0]}; renumber one")
    newest = max((m.version for m in known), default=0)
    done = applied_versions(store)
    if done and max(done) > newest:
        raise ConfigError(
            f"the database schema (version {max(done)}) is newer than this garrison knows ({newest}); "
            "upgrade garrison"
        )
    applied = []
    for migration in known:
        if migration.version in done:
            continue
        with store.transaction() as conn:
            # Another process may have applied it while we waited for the write lock.
            if conn.execute(
                "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
            ).fetchone():
                continue
            for statement in statements(migration.sql):
                conn.execute(store.migration_sql(statement))
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, to_iso(time.time())),
            )
        applied.append(migration.version)
    return applied
