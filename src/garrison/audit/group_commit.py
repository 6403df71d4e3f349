"""Group commit: the audit writes of many concurrent requests made durable by one fsync.

Every writer runs its unit of work (its usage rows and audit record) inside one shared transaction, in a
savepoint of its own, while it holds the group lock; the last writer of a wave commits for all of them, and
each returns only once the commit that holds its own unit is durable. Writers that arrive during a commit
wait for it and form the next wave, so the batch grows with the load and a lone request costs one fsync,
as before. A unit that fails rolls back to its savepoint and leaves the others in the batch untouched.

Relaxed (`audit.durability = "answer"`): the batch's commit flushes the log to disk only when one of its units
asked to be durable (`unit(durable=True)`); the others are committed, in order, into the log and reach the
disk with the next flush, which covers everything written before it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from garrison.store import Store


class GroupCommit:
    """Units of work from any thread, committed together; `unit()` returns once its commit is durable."""

    def __init__(self, store: Store, *, relaxed: bool = False) -> None:
        self._store = store
        self._relaxed = relaxed
        self._sync = False  # the open batch holds a unit that must be durable when its commit returns
        self._commit_sync = True  # what the commit under way must do
        self._cond = threading.Condition(threading.Lock())
        self._conn: sqlite3.Connection | None = None
        self._local = threading.local()
        self._arrivals = 0  # writers between arriving and finishing their unit
        self._committing = False
        self._batch = 0  # the open (or last opened) batch
        self._settled = 0  # the last batch whose commit finished
        self._errors: dict[int, BaseException] = {}
        self.commits = 0
        self.units = 0

    @contextmanager
    def unit(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One writer's work, in the shared transaction; nested use on the same thread joins it.

        `durable` False (relaxed only): its commit need not reach the disk before it returns; it does with the
        next durable one. A nested unit is part of the outer one, which decides.
        """
        joined: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if joined is not None:
            yield joined
            return
        with self._cond:
            self._arrivals += 1
            try:
                while self._committing:
                    self._cond.wait()
                conn = self._begin()
                self._sync = self._sync or durable or not self._relaxed
                batch = self._batch
                conn.execute("SAVEPOINT audit_unit")
                self._local.conn = conn
                try:
                    with self._store.bound(conn):
                        yield conn
                except BaseException:
                    conn.execute("ROLLBACK TO audit_unit")
                    raise
                finally:
                    self._local.conn = None
                    conn.execute("RELEASE audit_unit")
                self.units += 1
            finally:
                self._arrivals -= 1
                self._commit_if_last()
            while self._settled < batch:
                self._cond.wait()
            error = self._errors.get(batch)
            if error is not None:
                raise error

    def _begin(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._store.open_connection()
            if self._relaxed:
                self._store.relax(self._conn)
        if not self._conn.in_transaction:
            self._conn.execute("BEGIN IMMEDIATE")
            self._batch += 1
            self._sync = False
        return self._conn

    def _commit_if_last(self) -> None:
        """The last writer of a wave commits it, with the lock released so the next wave can gather."""
        conn = self._conn
        if self._arrivals or self._committing or conn is None or not conn.in_transaction:
            return
        batch = self._batch
        self._commit_sync = self._sync or not self._relaxed
        self._committing = True
        self._cond.release()
        error: BaseException | None = None
        try:
            self._execute_commit(conn)
        except BaseException as exc:  # noqa: BLE001 - every writer of the batch must hear of it
            error = exc
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        finally:
            self._cond.acquire()
        self._committing = False
        self.commits += 1
        self._errors.pop(batch - 64, None)
        if error is not None:
            self._errors[batch] = error
        self._settled = batch
        self._cond.notify_all()

    def _execute_commit(self, conn: sqlite3.Connection) -> None:
        """The one fsync of a batch (runs without the group lock); relaxed, only when a unit needs it."""
        if self._relaxed:
            self._store.commit(conn, durable=self._commit_sync)
        else:
            conn.execute("COMMIT")
