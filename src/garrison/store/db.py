"""The one store: SQLite under GARRISON_HOME (WAL, migrations) by default, PostgreSQL by URL (store/postgres.py)."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from garrison.errors import ConfigError
from garrison.settings import Settings
from garrison.store.migrate import migrate

Params = Sequence[Any]


class Store:
    """A thread-safe database handle: one SQLite connection per thread, explicit write transactions.

    SQL stays portable (`?` placeholders aside): standard DDL, `ON CONFLICT ... DO UPDATE`, ISO-8601 text
    timestamps, so a PostgreSQL implementation can sit behind the same methods.
    """

    dialect = "sqlite"
    # What a failed database operation raises on this backend (the audit log turns them into AuditWriteError).
    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)

    def __init__(self, path: Path, *, busy_timeout_s: float = 10.0, migrations: str = "garrison.store") -> None:
        self.path = path
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        _create_private_file(path)
        migrate(self, migrations)

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened in WAL mode with synchronous=FULL (each commit is fsynced)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and not self._closed:
            return conn
        conn = self.open_connection()
        self._local.conn = conn
        return conn

    def open_connection(self) -> sqlite3.Connection:
        """A new connection (WAL, synchronous=FULL), closed with the store; usable from any thread."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the store is closed")
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            self._connections.append(conn)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def relax(self, conn: sqlite3.Connection) -> None:
        """Let `conn`'s commits skip their own fsync (synchronous=NORMAL in WAL mode): each commit is written
        to the log in order and reaches the disk with the next flush (`commit(durable=True)`), which covers
        every commit before it. Audit group commit uses this with `audit.durability = "answer"`."""
        conn.execute("PRAGMA synchronous=NORMAL")

    def commit(self, conn: sqlite3.Connection, *, durable: bool) -> None:
        """Commit `conn`'s open transaction (a relaxed connection); `durable`: then flush the log to disk."""
        conn.execute("COMMIT")
        if durable:
            fd = os.open(f"{self.path}-wal", os.O_RDONLY)  # fsync flushes the file's data, whoever wrote it
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    @contextmanager
    def bound(self, conn: sqlite3.Connection) -> Iterator[None]:
        """Make `conn` this thread's connection for a while, so every write made meanwhile joins its transaction."""
        previous = getattr(self._local, "conn", None)
        self._local.conn = conn
        try:
            yield
        finally:
            self._local.conn = previous

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken up front (BEGIN IMMEDIATE), committed durably or rolled back.

        Nested use on the same thread joins the open transaction: the outermost one commits, so every
        write this thread makes meanwhile (through any component) lands atomically with it.
        """
        conn = self.connection()
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement (its own transaction unless this thread has one open); returns rows changed."""
        return self.connection().execute(sql, params).rowcount

    def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """All rows of a query."""
        return self.connection().execute(sql, params).fetchall()

    def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        """The first row of a query, or None."""
        row: sqlite3.Row | None = self.connection().execute(sql, params).fetchone()
        return row

    def iterate(self, sql: str, params: Params = ()) -> Iterator[sqlite3.Row]:
        """Rows of a query, streamed (for exports and verification of long logs)."""
        yield from self.connection().execute(sql, params)

    def is_outage(self, exc: BaseException) -> bool:
        """Whether `exc` means the database is unreachable (never for an embedded SQLite file)."""
        return False

    def migration_sql(self, statement: str) -> str:
        """A migration statement as this backend reads it (SQLite: as written)."""
        return statement

    def close(self) -> None:
        """Close every connection this store opened, in every thread."""
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()


def _create_private_file(path: Path) -> None:
    """Create the database file 0600 before SQLite does, so it and its -wal/-shm files stay private."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def open_store(settings: Settings) -> Store:
    """The store named by `store.url` (or its older alias `database_url`; default: SQLite under home)."""
    url = settings.store.url or settings.database_url
    if not url:
        settings.ensure_home()
        return Store(settings.sqlite_path)
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme == "sqlite":
        return Store(sqlite_path_from_url(url))
    if scheme in ("postgres", "postgresql"):
        from garrison.store.postgres import PostgresStore

        return PostgresStore(url.replace("postgresql+psycopg://", "postgresql://", 1))
    # The URL itself is not echoed: it may carry a password.
    raise ConfigError(
        f"store.url has an unsupported scheme '{scheme}'; use sqlite:///PATH or postgresql://USER@HOST/DB"
    )


def sqlite_path_from_url(url: str) -> Path:
    """The file of a SQLAlchemy-style SQLite URL: sqlite:///relative/to/cwd.db or sqlite:////absolute.db."""
    _, sep, rest = url.partition(":///")
    path = rest.split("?", 1)[0]
    if not sep or not path or path == ":memory:":
        raise ConfigError(
            "a SQLite database_url must name a file: sqlite:///PATH (relative) or sqlite:////PATH"
        )
    return Path(path).expanduser().resolve()
