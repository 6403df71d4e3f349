"""The store on PostgreSQL (`store.url = "postgresql://..."`): psycopg 3 behind the SQLite store's surface.

Every caller of the store speaks the small sqlite3 surface (`conn.execute(sql, params)` returning a cursor,
`?` placeholders, rows read by index or name, `in_transaction`, `BEGIN IMMEDIATE`), so this backend adapts
that surface instead of forking the queries: `?` becomes `%s`, REAL columns become DOUBLE PRECISION in
migrations, and a write transaction (`BEGIN IMMEDIATE`) takes one transaction-scoped advisory lock. That
lock serialises writers across every gateway on the database exactly as SQLite's single writer does, which
is what the quota check-and-reserve and the audit chain's read-last-hash-then-append rely on: concurrent
gateways append to one verifiable chain.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from typing import Any, cast

import psycopg
from psycopg.pq import TransactionStatus

from garrison.errors import ConfigError
from garrison.store.db import Store
from garrison.store.migrate import migrate

# The one advisory lock every write transaction takes (an arbitrary constant: "garrison" in ASCII, folded).
WRITE_LOCK = 0x67617272
CONNECT_TIMEOUT_S = 2
_PLACEHOLDER = re.compile(r"\?")
_REAL = re.compile(r"\bREAL\b")


class Row:
    """A result row readable like sqlite3.Row: by position, by column name, and as a mapping (`dict(row)`)."""

    __slots__ = ("_names", "_values")

    def __init__(self, names: Sequence[str], values: Sequence[Any]) -> None:
        self._names = names
        self._values = values

    def __getitem__(self, item: int | str) -> Any:
        if isinstance(item, int):
            return self._values[item]
        return self._values[self._names.index(item)]

    def keys(self) -> list[str]:
        return list(self._names)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def _rows(cursor: psycopg.Cursor[Any]) -> Any:
    names = [c.name for c in cursor.description or ()]
    return lambda values: Row(names, values)


def translate(sql: str) -> str:
    """SQLite-flavoured SQL as PostgreSQL reads it: `?` -> `%s` (a literal `%` doubled)."""
    return _PLACEHOLDER.sub("%s", sql.replace("%", "%%"))


def ddl(sql: str) -> str:
    """A migration statement for PostgreSQL: SQLite's REAL (8 bytes) is DOUBLE PRECISION there, not float4."""
    return _REAL.sub("DOUBLE PRECISION", sql)


class PgConnection:
    """One psycopg connection (autocommit, explicit BEGIN/COMMIT) with the sqlite3 surface the store's users touch."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.raw = self._connect()
        self._sql: dict[str, str] = {}

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, autocommit=True, row_factory=_rows, connect_timeout=CONNECT_TIMEOUT_S)

    @property
    def in_transaction(self) -> bool:
        if self.raw.broken or self.raw.closed:  # a lost connection holds no transaction any more
            return False
        return self.raw.info.transaction_status != TransactionStatus.IDLE

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        if self.raw.broken or self.raw.closed:  # the server went away (restart, outage): connect again
            self.raw = self._connect()
        idle = not self.in_transaction
        try:
            return self._execute(sql, params)
        except psycopg.IntegrityError as exc:  # callers catch sqlite3's (a duplicate user name, say)
            raise sqlite3.IntegrityError(str(exc).splitlines()[0]) from exc
        except psycopg.OperationalError:
            # A connection the server dropped is only noticed when used: outside a transaction, a BEGIN or
            # a read is safe to try once more on a fresh connection (a write might have committed).
            if not (idle and self.raw.broken and sql.lstrip().upper().startswith(("BEGIN", "SELECT"))):
                raise
            self.raw = self._connect()
            return self._execute(sql, params)

    def _execute(self, sql: str, params: Sequence[Any]) -> psycopg.Cursor[Any]:
        head = sql.lstrip()[:16].upper()
        if head.startswith("BEGIN"):  # BEGIN IMMEDIATE: a write transaction, one writer at a time
            cursor = self.raw.execute("BEGIN")
            self.raw.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            return cursor
        if not params:  # no parameters: psycopg sends the text as is, `%` included
            return self.raw.execute(sql.encode() if "%" in sql else sql)
        text = self._sql.get(sql)
        if text is None:
            text = self._sql[sql] = translate(sql)
        return self.raw.execute(text, tuple(params))

    def close(self) -> None:
        self.raw.close()


class PostgresStore(Store):
    """The store on one PostgreSQL database, shared by every gateway pointed at it."""

    dialect = "postgresql"
    errors: tuple[type[BaseException], ...] = (sqlite3.Error, psycopg.Error)

    def __init__(self, url: str) -> None:  # noqa: D107 - the base creates a file; this connects instead
        self.url = url
        self._local = threading.local()
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False
        try:
            self.open_connection().close()
        except psycopg.OperationalError as exc:
            raise ConfigError(f"cannot connect to the PostgreSQL store ({_without_secrets(exc)})") from None
        migrate(self)

    def open_connection(self) -> sqlite3.Connection:
        with self._lock:
            if self._closed:
                raise RuntimeError("the store is closed")
        conn = PgConnection(self.url)
        with self._lock:
            self._connections.append(conn)
        return cast(sqlite3.Connection, conn)

    def migration_sql(self, statement: str) -> str:
        return ddl(statement)

    def relax(self, conn: sqlite3.Connection) -> None:
        """Nothing to set per connection: PostgreSQL relaxes one transaction at a time (see `commit`)."""

    def commit(self, conn: sqlite3.Connection, *, durable: bool) -> None:
        """Commit; not `durable`: without waiting for the WAL flush (synchronous_commit off for this
        transaction), which the next synchronous commit covers."""
        if not durable:
            conn.execute("SET LOCAL synchronous_commit TO OFF")
        conn.execute("COMMIT")

    def is_outage(self, exc: BaseException) -> bool:
        """Whether `exc` (or what caused it) says the database cannot be reached, rather than a bad query."""
        seen: BaseException | None = exc
        while seen is not None:
            if isinstance(seen, psycopg.OperationalError):
                return True
            seen = seen.__cause__
        return False


def _without_secrets(exc: BaseException) -> str:
    """An error message with any password= or user:pass@ it carries removed."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"password=\S+", "password=***", text)
    return re.sub(r"//[^/@\s]+@", "//***@", text)
