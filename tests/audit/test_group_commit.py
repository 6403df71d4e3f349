"""Group commit: concurrent audit writes share an fsync, each acknowledged only once it is durable."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from garrison.audit import AuditEvent, AuditLog
from garrison.audit.group_commit import GroupCommit
from garrison.errors import AuditWriteError
from garrison.store import Store


def _event(i: int) -> AuditEvent:
    return AuditEvent(request_id=f"r{i}", method="POST", route="/v1/chat/completions", status=200, model="m")


def _durable_count(path: Path) -> int:
    """Rows another connection sees: only committed ones."""
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0])


def _until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


class SlowFirstCommit(GroupCommit):
    """The first fsync lasts until three more writers have arrived, as under load."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.first = True

    def _execute_commit(self, conn: sqlite3.Connection) -> None:
        if self.first:
            self.first = False
            with self._cond:
                self._cond.wait_for(lambda: self._arrivals >= 3, timeout=10)
        super()._execute_commit(conn)


def test_writers_arriving_during_a_commit_share_the_next_one(tmp_path: Path) -> None:
    store = Store(tmp_path / "g.db")
    log = AuditLog(store, env="dev", secret=b"s")
    group = SlowFirstCommit(store)
    log._group = group
    acknowledged: list[tuple[int, int]] = []  # (request, committed rows visible at acknowledgement)

    def write(i: int) -> None:
        log.append(_event(i))
        acknowledged.append((i, _durable_count(tmp_path / "g.db")))

    first = threading.Thread(target=write, args=(0,))
    first.start()
    _until(lambda: group._committing, "the first commit")
    others = [threading.Thread(target=write, args=(i,)) for i in (1, 2, 3)]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join(timeout=10)
    assert (group.units, group.commits) == (4, 2)  # one fsync for the first, one for the three after it
    assert sorted(i for i, _ in acknowledged) == [0, 1, 2, 3]
    assert all(visible >= 1 for i, visible in acknowledged if i == 0)
    assert all(visible == 4 for i, visible in acknowledged if i != 0)  # durable before acknowledged
    assert log.verify().ok and log.count() == 4
    store.close()


def test_concurrent_appends_keep_one_intact_chain(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    log = AuditLog(store, env="dev", secret=b"s")
    threads = [threading.Thread(target=lambda k=k: [log.append(_event(k * 100 + j)) for j in range(25)])
               for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert log.count() == 200 == _durable_count(tmp_path / "c.db")
    verification = log.verify()
    assert verification.ok and verification.records == 200
    store.close()


def test_a_failing_unit_rolls_back_alone_and_nested_writes_join(tmp_path: Path) -> None:
    store = Store(tmp_path / "f.db")
    log = AuditLog(store, env="dev", secret=None)
    with pytest.raises(AuditWriteError):
        with log.transaction() as conn:
            log.append(_event(1))  # nested: joins this unit
            conn.execute("INSERT INTO no_such_table VALUES (1)")
    with log.transaction():
        log.append(_event(2))
        store.execute("CREATE TABLE side (x)")  # any store write on this thread joins the unit
        store.execute("INSERT INTO side VALUES (7)")
    assert [r["request_id"] for r in log.query()] == ["r2"]
    with sqlite3.connect(tmp_path / "f.db") as other:
        assert other.execute("SELECT x FROM side").fetchall() == [(7,)]
    assert log.verify().ok
    store.close()


def test_without_group_commit_each_write_commits_alone(tmp_path: Path) -> None:
    store = Store(tmp_path / "n.db")
    log = AuditLog(store, env="dev", secret=None, group_commit=False)
    log.append(_event(1))
    assert _durable_count(tmp_path / "n.db") == 1 and log.verify().ok
    store.close()


def _fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files garrison's store fsyncs itself (the real fsync still runs)."""
    flushed: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        flushed.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return flushed


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names open files through /proc")
def test_answer_durability_flushes_the_log_only_for_what_must_be_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.db"
    store = Store(path)
    log = AuditLog(store, env="dev", secret=b"s", durability="answer")
    flushed = _fsyncs(monkeypatch)
    with log.transaction(durable=False):  # an admission: committed in order, on disk with the next flush
        log.append(_event(1))
    assert flushed == [] and _durable_count(path) == 1
    assert log._group is not None and log._group._conn is not None
    assert log._group._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: commits skip fsync
    log.append(_event(2))  # an end: it and everything before it are flushed before it returns
    assert flushed == [f"{path}-wal"]
    verification = log.verify()
    assert verification.ok and verification.records == 2
    store.close()


def test_admission_durability_fsyncs_every_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path / "d.db")
    log = AuditLog(store, env="dev", secret=b"s")  # the default
    assert log.durability == "admission"
    with log.transaction(durable=False):
        log.append(_event(1))
    assert log._group is not None and log._group._conn is not None
    assert log._group._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: SQLite fsyncs each commit
    assert log.verify().ok
    store.close()


def test_unknown_durability_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "u.db")
    with pytest.raises(ValueError, match="durability"):
        AuditLog(store, env="dev", secret=None, durability="never")
    store.close()
