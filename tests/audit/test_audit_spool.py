"""The local audit queue of an outage: durable lines, a torn last line ignored, bounded, cleared."""

from __future__ import annotations

from pathlib import Path

import pytest

from garrison.audit.log import AuditEvent
from garrison.audit.spool import AuditSpool
from garrison.errors import AuditWriteError
from garrison.security.outage import KeyCache
from garrison.security.principal import Principal


def test_queued_records_come_back_in_order_and_a_torn_line_is_dropped(tmp_path: Path) -> None:
    spool = AuditSpool(tmp_path / "q.jsonl", max_bytes=10_000)
    for i in range(3):
        spool.put(AuditEvent(request_id=f"r{i}", method="POST", route="/x", status=200), 100.0 + i,
                  ("k", "m", "2026-12-01", 3, 4) if i == 2 else None)
    with (tmp_path / "q.jsonl").open("ab") as handle:
        handle.write(b'{"event": {"request_id": "torn"')  # a crash mid-write: never acknowledged
    entries = list(spool.entries())
    assert [e.event["request_id"] for e in entries] == ["r0", "r1", "r2"]
    assert entries[2].usage == ("k", "m", "2026-12-01", 3, 4) and entries[0].at == 100.0
    assert (tmp_path / "q.jsonl").stat().st_mode & 0o777 == 0o600
    spool.clear()
    assert not spool.pending and spool.count() == 0


def test_the_queue_is_bounded(tmp_path: Path) -> None:
    spool = AuditSpool(tmp_path / "q.jsonl", max_bytes=1024)
    with pytest.raises(AuditWriteError, match="queue is full"):
        for i in range(100):
            spool.put(AuditEvent(request_id=f"r{i}", method="POST", route="/x", status=200), 1.0)
    assert spool.size() <= 1024


def test_the_key_cache_is_bounded_and_expires(tmp_path: Path) -> None:
    now = [0.0]
    cache = KeyCache(2, grace=60, clock=lambda: now[0])
    match = type("M", (), {"record": Principal.anonymous()})()
    for digest in ("a", "b", "c"):
        cache.put(digest, match)  # type: ignore[arg-type]
    assert len(cache) == 2
    with pytest.raises(Exception, match="not verified"):
        cache.get("a")  # evicted, least recently verified
    assert cache.get("c") is match
    now[0] = 61
    with pytest.raises(Exception, match="not verified in the last 60s"):
        cache.get("c")
