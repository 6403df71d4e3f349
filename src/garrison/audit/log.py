"""The audit log: typed events appended durably to one hash-chained table, queried and verified."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from garrison.audit.chain import GENESIS, MAC_VERSION, Verification, record_hash, record_mac, verify_chain
from garrison.audit.group_commit import GroupCommit
from garrison.audit.spool import AuditSpool, Usage
from garrison.errors import AuditWriteError
from garrison.store import Store
from garrison.store.times import Clock, to_iso
from garrison.subkeys import AUDIT_MACS, derive

CONTENT_MODES = ("none", "hash", "full")
# Typed events: one `request` record for a request the pipeline never admitted (a denial, a bad body, an
# admin call), and a chained `request.admitted` / `request.finished` pair for every admitted generation.
EVENTS = ("request", "request.admitted", "request.finished")
# When records reach the disk: "admission" (the default): a request's admission (its reservation and
# `request.admitted`) is durable before the engine runs, and its end before the answer: two fsyncs a request
# (shared under load by group commit). "answer": the admission is committed without its own fsync and reaches
# the disk with the next durable commit, at the latest its own end's, before the answer: one fsync a request.
# Every answered request is on disk either way; "answer" can lose, on a power loss or OS crash (not a crash
# of garrison alone), the admission of requests still running then, which were never answered.
DURABILITY_MODES = ("admission", "answer")


@dataclass(slots=True)
class AuditEvent:
    """What happened in one request (or at one step of it: admitted, finished)."""

    request_id: str
    method: str
    route: str
    status: int
    decision: str = "allow"
    reason: str | None = None
    key_id: str | None = None
    key_name: str | None = None
    client: str | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    prompt_text: str | None = None
    response_text: str | None = None
    event: str = "request"
    client_request_id: str | None = None
    error_code: str | None = None
    details: dict[str, Any] | None = None


class AuditLog:
    """The one audit sink: `append` returns only once the record is committed with synchronous=FULL."""

    def __init__(
        self,
        store: Store,
        *,
        env: str,
        secret: bytes | None,
        content: str = "none",
        clock: Clock = time.time,
        group_commit: bool = True,
        durability: str = "admission",
    ) -> None:
        if content not in CONTENT_MODES:
            raise ValueError(f"audit content must be one of {CONTENT_MODES}")
        if durability not in DURABILITY_MODES:
            raise ValueError(f"audit durability must be one of {DURABILITY_MODES}")
        self.env = env
        self.content = content
        self._store = store
        self._secret = secret
        self._mac_key = derive(secret, AUDIT_MACS) if secret is not None else None  # what chain.sign derives
        self._clock = clock
        self._lock = threading.RLock()
        self.durability = durability
        self._group = GroupCommit(store, relaxed=durability == "answer") if group_commit else None
        self._depth = threading.local()
        # Set for a shared store (PostgreSQL): records queue here while it is unreachable (audit/spool.py).
        self.spool: AuditSpool | None = None
        self.replay_usage: Callable[[str, str, str, int, int], None] | None = None

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A durable write transaction for records and whatever must commit with them (usage rows).

        With group commit (the default) concurrent transactions share one fsync; each still returns only once
        its own writes are durable, whoever the caller is. `durable` False marks an admission: with
        `durability = "answer"` (and group commit) it returns once committed, durable with the next flush.
        """
        self._depth.n = getattr(self._depth, "n", 0) + 1
        try:
            if self._group is not None:
                with self._group.unit(durable) as conn:
                    yield conn
            else:
                with self._lock, self._store.transaction() as conn:
                    yield conn
        except self._store.errors + (OSError, RuntimeError) as exc:
            raise AuditWriteError(
                f"the audit record could not be written ({type(exc).__name__}: {exc})"
            ) from exc
        finally:
            self._depth.n -= 1

    def append(self, event: AuditEvent, *, usage: Usage | None = None) -> dict[str, Any]:
        """Chain and commit one record (and the `usage` it settles, with it); raises AuditWriteError when it
        could not be made durable. With a spool, a record the unreachable store cannot take is queued on
        disk instead (as durable), and queued records go first once the store answers."""
        outermost = getattr(self._depth, "n", 0) == 0
        if self.spool is not None and outermost and not self.ready():
            return self._queue(event, usage)
        try:
            with self.transaction() as conn:
                if usage is not None and self.replay_usage is not None:
                    self.replay_usage(*usage)
                return self._insert(conn, event)
        except AuditWriteError as exc:
            if self.spool is None or not outermost or not self._store.is_outage(exc):
                raise
            return self._queue(event, usage)

    def ready(self) -> bool:
        """No record waits in the spool, or every queued one was appended now (in order); False while the
        store stays unreachable."""
        spool = self.spool
        if spool is None or not spool.pending:
            return True
        with spool.lock:
            try:
                for queued in spool.entries():
                    event = AuditEvent(**queued.event)
                    with self.transaction() as conn:
                        if conn.execute(  # idempotent: a replay cut short never doubles a record
                            "SELECT 1 FROM audit_log WHERE request_id = ? AND event = ? AND ts = ?",
                            (event.request_id, event.event, to_iso(queued.at)),
                        ).fetchone():
                            continue
                        if queued.usage is not None and self.replay_usage is not None:
                            self.replay_usage(*queued.usage)
                        self._insert(conn, event, at=queued.at)
            except AuditWriteError as exc:
                if self._store.is_outage(exc):
                    return False
                raise
            spool.clear()
        return True

    def _queue(self, event: AuditEvent, usage: Usage | None) -> dict[str, Any]:
        assert self.spool is not None
        at = self._clock()
        self.spool.put(event, at, usage)
        return {"queued": True, "request_id": event.request_id, "event": event.event, "ts": to_iso(at)}

    def _insert(self, conn: sqlite3.Connection, event: AuditEvent, *, at: float | None = None) -> dict[str, Any]:
        last = conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
        record = self._record(event, seq=last[0] + 1 if last else 1, prev_hash=last[1] if last else GENESIS, at=at)
        columns = ", ".join(record)
        marks = ", ".join("?" for _ in record)
        conn.execute(f"INSERT INTO audit_log ({columns}) VALUES ({marks})", tuple(record.values()))
        return record

    def query(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        key_id: str | None = None,
        decision: str | None = None,
        after_seq: int = 0,
        env: str | None = None,
        limit: int | None = 100,
    ) -> list[dict[str, Any]]:
        """Records in seq order matching the filters (`since` <= ts < `until`), from after `after_seq`."""
        return list(
            self.records(
                since=since, until=until, key_id=key_id, decision=decision, after_seq=after_seq, env=env,
                limit=limit,
            )
        )

    def records(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        key_id: str | None = None,
        decision: str | None = None,
        after_seq: int = 0,
        env: str | None = None,
        limit: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Stream matching records in seq order (for exports of any size); `env`: only that server's;
        `unfinished` marks an admitted request that has no finished record."""
        where: list[str] = ["seq > ?"]
        params: list[Any] = [after_seq]
        for clause, value in (("ts >= ?", since), ("ts < ?", until)):
            if value is not None:
                where.append(clause)
                params.append(to_iso(value))
        for clause, text in (("key_id = ?", key_id), ("decision = ?", decision), ("env = ?", env)):
            if text is not None:
                where.append(clause)
                params.append(text)
        sql = "SELECT * FROM audit_log WHERE " + " AND ".join(where) + " ORDER BY seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        unfinished = set(self.unfinished())
        for row in self._store.iterate(sql, params):
            record = dict(row)
            # computed, not chained: an admitted request with no finished record (a crash, or running now)
            record["unfinished"] = record["event"] == "request.admitted" and record["request_id"] in unfinished
            yield record

    def count(self) -> int:
        """How many records the log holds."""
        row = self._store.fetchone("SELECT COUNT(*) FROM audit_log")
        return int(row[0]) if row else 0

    def verify(self) -> Verification:
        """Recompute the whole chain (and its signatures when the secret is known); name unfinished requests."""
        rows = (dict(r) for r in self._store.iterate("SELECT * FROM audit_log ORDER BY seq"))
        result = verify_chain(rows, self._secret)
        return dataclasses.replace(result, unfinished=tuple(self.unfinished()))

    def unfinished(self) -> list[str]:
        """Request ids admitted but never finished (the server died mid-request, or it is running now)."""
        rows = self._store.fetchall(
            "SELECT a.request_id FROM audit_log a WHERE a.event = 'request.admitted' AND NOT EXISTS "
            "(SELECT 1 FROM audit_log f WHERE f.request_id = a.request_id AND f.event = 'request.finished') "
            "ORDER BY a.seq"
        )
        return [row[0] for row in rows]

    def anchor_problem(self, head: str | None, min_records: int | None) -> str | None:
        """How the log falls short of an anchor kept elsewhere (a head hash, a record count), or None."""
        if head is not None:
            row = self._store.fetchone("SELECT seq FROM audit_log WHERE hash = ?", (head.strip().lower(),))
            if row is None:
                return (f"the anchor head {head[:12]}... is no record of this chain: the records up to it "
                        "were deleted, or the chain was rewritten")
            if min_records is not None and int(row[0]) != min_records:
                return f"the anchor head is record {row[0]}, not record {min_records}: the chain was rewritten"
        count = self.count()
        if min_records is not None and count < min_records:
            return (f"the log holds {count} records, fewer than the {min_records} of the anchor: "
                    "the newest records were deleted or an older copy was restored")
        return None

    def _record(self, event: AuditEvent, *, seq: int, prev_hash: str, at: float | None = None) -> dict[str, Any]:
        record: dict[str, Any] = {
            "seq": seq,
            "ts": to_iso(self._clock() if at is None else at),
            "request_id": event.request_id,
            "key_id": event.key_id,
            "key_name": event.key_name,
            "env": self.env,
            "client": event.client,
            "method": event.method,
            "route": event.route,
            "model": event.model,
            "decision": event.decision,
            "reason": event.reason,
            "status": int(event.status),
            "prompt_tokens": int(event.prompt_tokens),
            "completion_tokens": int(event.completion_tokens),
            "latency_ms": round(float(event.latency_ms), 3),
            "content_mode": self.content,
            "prompt": self._content(event.prompt_text),
            "response": self._content(event.response_text),
            "prev_hash": prev_hash,
            "event": event.event,
            "client_request_id": event.client_request_id,
            "error_code": event.error_code,
            "details": json.dumps(event.details, sort_keys=True, separators=(",", ":")) if event.details else None,
        }
        record["hash"] = record_hash(record)
        record["mac"] = MAC_VERSION + record_mac(self._mac_key, record["hash"]) if self._mac_key is not None else None
        return record

    def _content(self, text: str | None) -> str | None:
        """Prompt or response text as the `audit.content` setting allows: nothing, its SHA-256, or itself."""
        if text is None or self.content == "none":
            return None
        if self.content == "hash":
            return hashlib.sha256(text.encode("utf-8")).hexdigest()
        return text
